// common/cli/args.h — a small typed command-line parser for kvshuttle's tools.
//
// Options are declared with their help text and default; `--name value` and `--name=value` are
// accepted, booleans take no value. Unknown options, missing values and unparsable numbers are
// errors (never silently the default). `--help` prints every option with its default.
//
//   kvs::ArgParser p("kvs-bench codecs", "Measure codec throughput.");
//   int64_t tokens = 1024;
//   std::string model = "llama-3.1-8b";
//   p.AddInt("tokens", &tokens, "prompt tokens");
//   p.AddString("model", &model, "geometry preset");
//   KVS_RETURN_IF_ERROR(p.Parse(argc, argv));   // argv[0] is skipped
//   if (p.help_requested()) { std::cout << p.Usage(); return 0; }
// or, in a main():
//   if (std::optional<int> rc = p.ParseForMain(argc, argv)) return *rc;
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kvs {

class ArgParser {
 public:
  ArgParser(std::string program, std::string summary);

  void AddString(const std::string& name, std::string* out, const std::string& help);
  void AddInt(const std::string& name, int64_t* out, const std::string& help);
  void AddDouble(const std::string& name, double* out, const std::string& help);
  void AddBool(const std::string& name, bool* out, const std::string& help);

  // Parses argv[1..argc). Positional arguments are collected into positional().
  absl::Status Parse(int argc, char** argv);
  bool help_requested() const { return help_; }
  // Parse for a main(): nullopt = go on; else the exit status, after printing the usage to stdout
  // (--help: 0) or "<program>: <error>" to stderr (2).
  std::optional<int> ParseForMain(int argc, char** argv);
  bool was_set(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  std::string Usage() const;

 private:
  struct Opt {
    std::string name, help, default_text;
    bool is_bool;
    std::function<absl::Status(const std::string&)> set;
    bool seen = false;
  };
  Opt* Find(const std::string& name);

  std::string program_, summary_;
  std::vector<Opt> opts_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace kvs
