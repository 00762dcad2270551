#include "common/cli/args.h"

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvs {

ArgParser::ArgParser(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void ArgParser::AddString(const std::string& name, std::string* out, const std::string& help) {
  opts_.push_back({name, help, *out, false, [out](const std::string& v) {
                     *out = v;
                     return absl::OkStatus();
                   }});
}

void ArgParser::AddInt(const std::string& name, int64_t* out, const std::string& help) {
  opts_.push_back({name, help, std::to_string(*out), false, [out, name](const std::string& v) {
                     int64_t parsed;  // the default stays when the value is not an integer
                     if (!absl::SimpleAtoi(v, &parsed)) {
                       return absl::InvalidArgumentError(
                           absl::StrCat("--", name, ": '", v, "' is not an integer"));
                     }
                     *out = parsed;
                     return absl::OkStatus();
                   }});
}

void ArgParser::AddDouble(const std::string& name, double* out, const std::string& help) {
  opts_.push_back({name, help, absl::StrCat(*out), false, [out, name](const std::string& v) {
                     double parsed;  // the default stays when the value is not a number
                     if (!absl::SimpleAtod(v, &parsed)) {
                       return absl::InvalidArgumentError(
                           absl::StrCat("--", name, ": '", v, "' is not a number"));
                     }
                     *out = parsed;
                     return absl::OkStatus();
                   }});
}

void ArgParser::AddBool(const std::string& name, bool* out, const std::string& help) {
  opts_.push_back({name, help, *out ? "true" : "false", true, [out, name](const std::string& v) {
                     if (v.empty() || v == "true" || v == "1") {
                       *out = true;
                     } else if (v == "false" || v == "0") {
                       *out = false;
                     } else {
                       return absl::InvalidArgumentError(
                           absl::StrCat("--", name, ": '", v, "' is not a boolean"));
                     }
                     return absl::OkStatus();
                   }});
}

ArgParser::Opt* ArgParser::Find(const std::string& name) {
  for (Opt& o : opts_) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

bool ArgParser::was_set(const std::string& name) const {
  for (const Opt& o : opts_) {
    if (o.name == name) return o.seen;
  }
  return false;
}

absl::Status ArgParser::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Opt* o = Find(name);
    if (o == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    }
    if (!has_value && !o->is_bool) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    absl::Status s = o->set(value);
    if (!s.ok()) return s;
    o->seen = true;
  }
  return absl::OkStatus();
}

std::optional<int> ArgParser::ParseForMain(int argc, char** argv) {
  if (absl::Status s = Parse(argc, argv); !s.ok()) {
    std::cerr << program_ << ": " << s.message() << " (see --help)\n";
    return 2;
  }
  if (help_) {
    std::cout << Usage();
    return 0;
  }
  return std::nullopt;
}

std::string ArgParser::Usage() const {
  std::string u = absl::StrCat("usage: ", program_, " [options]\n", summary_, "\n\noptions:\n");
  for (const Opt& o : opts_) {
    absl::StrAppend(&u, absl::StrFormat("  --%-22s %s (default: %s)\n",
                                        o.name + (o.is_bool ? "" : " V"), o.help,
                                        o.default_text.empty() ? "\"\"" : o.default_text));
  }
  return u;
}

}  // namespace kvs
