// services/config/config.h — typed configuration for kvshuttle's daemons and tools.
//
// A component declares its options once, as a plain struct whose fields carry their documented
// defaults, and binds each field to a ConfigTable with its key, help text and validation. The
// one loader applies, in order of increasing precedence: the struct's defaults, a config file
// (`--config FILE`), then command-line flags. Absent means default; present but invalid is an
// error (never a silent fallback); an unknown key is an error. `--dump-config` prints every key
// with its help, default and effective value as a config file that loads back unchanged.
//
//   struct DecodeOptions { std::string listen = "127.0.0.1:50052"; int64_t max_sessions = 64; };
//   DecodeOptions o;
//   kvs::config::ConfigTable t("kvs-decode", "KV-cache decode daemon.");
//   t.HostPort("listen", &o.listen, "gRPC listen address");
//   t.Int("max_sessions", &o.max_sessions, "sessions admitted at once", 1, 4096);
//   KVS_ASSIGN_OR_RETURN(kvs::config::CommandLine cl, kvs::config::Load(t, argc, argv));
//   if (cl.help) std::cout << t.Usage();
//   if (cl.dump_config) std::cout << t.Dump();
//
// File format: one `key = value` per line; `#` starts a comment line; blank lines are ignored;
// values may be double-quoted (quotes are stripped, `\"` and `\\` unescaped). A key may appear
// once per file. Lists are comma-separated. Flags: `--key value` or `--key=value`; dashes and
// underscores in keys are interchangeable. A list flag given
// several times on the command line accumulates (the first replaces the file's value). A boolean
// flag alone means true; `--flag=false` turns it off.
//
// Thread-safety: a ConfigTable is used by one thread (main) while loading; the bound structs are
// then passed by value or const reference.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvs::config {

// Extra validation of a parsed value (after type and range checks). Returns a non-OK status
// whose message says what is wrong (the loader adds the key and the source).
using StringValidator = std::function<absl::Status(const std::string&)>;

class ConfigTable {
 public:
  ConfigTable(std::string program, std::string summary);
  ConfigTable(const ConfigTable&) = delete;
  ConfigTable& operator=(const ConfigTable&) = delete;

  // Binds options. The field's current value is its documented default. Keys use [a-z0-9_].
  void String(absl::string_view key, std::string* out, absl::string_view help,
              StringValidator validate = nullptr);
  // "host:port" (port 0..65535; host a name, IPv4, or [IPv6]). `allow_empty` accepts "".
  void HostPort(absl::string_view key, std::string* out, absl::string_view help,
                bool allow_empty = false);
  void Int(absl::string_view key, int64_t* out, absl::string_view help, int64_t min, int64_t max);
  void Double(absl::string_view key, double* out, absl::string_view help, double min, double max);
  void Bool(absl::string_view key, bool* out, absl::string_view help);
  // One of `allowed`.
  void Enum(absl::string_view key, std::string* out, std::vector<std::string> allowed,
            absl::string_view help);
  // Comma-separated; each element checked by `validate` when given. Empty elements are errors.
  void StringList(absl::string_view key, std::vector<std::string>* out, absl::string_view help,
                  StringValidator validate = nullptr);
  // A list of "host:port".
  void HostPortList(absl::string_view key, std::vector<std::string>* out, absl::string_view help);

  // Sets one key from `source` (a file:line or "--flag" for messages). `from_command_line`
  // only matters for lists (see the banner).
  absl::Status Set(absl::string_view key, absl::string_view value, absl::string_view source,
                   bool from_command_line = false);

  // Parses config text (the file format above); `source` names it in errors.
  absl::Status LoadText(absl::string_view text, absl::string_view source);
  absl::Status LoadFile(const std::string& path);

  // Whether `key` was set by a file or flag (as opposed to its default).
  bool IsSet(absl::string_view key) const;
  bool HasKey(absl::string_view key) const;
  bool IsBool(absl::string_view key) const;
  std::vector<std::string> Keys() const;

  // Every key with help, default and effective value, as a loadable config file.
  std::string Dump() const;
  // --help text: synopsis, summary, the meta flags, and every key.
  std::string Usage() const;
  const std::string& program() const { return program_; }

 private:
  struct Entry {
    std::string key;
    std::string help;
    std::string type;  // "string", "host:port", "int [a, b]", ...
    std::string default_text;
    bool is_bool = false;
    bool is_list = false;
    bool set = false;
    bool set_on_command_line = false;
    std::function<absl::Status(const std::string&, bool append)> parse;
    std::function<std::string()> current;
  };
  void Add(Entry e);
  Entry* Find(absl::string_view key);
  const Entry* Find(absl::string_view key) const;

  std::string program_;
  std::string summary_;
  std::vector<Entry> entries_;
};

// What the meta flags asked for.
struct CommandLine {
  bool help = false;         // --help / -h
  bool dump_config = false;  // --dump-config
  std::string config_file;   // --config FILE (already loaded)
  std::vector<std::string> positional;
};

// Loads `--config FILE` first (wherever it appears), then every other flag in order.
absl::StatusOr<CommandLine> Load(ConfigTable& table, int argc, const char* const* argv);

// Splits "host:port" (IPv6 hosts in brackets). Errors name what is wrong.
absl::Status SplitHostPort(absl::string_view hp, std::string* host, int* port);
absl::Status ValidateHostPort(absl::string_view hp);

}  // namespace kvs::config
