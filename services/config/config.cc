#include "services/config/config.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "common/status/status.h"

namespace kvs::config {
namespace {

std::string NormalizeKey(absl::string_view key) {
  std::string k(key);
  for (char& c : k) {
    if (c == '-') c = '_';
  }
  return k;
}

bool ValidKeyName(absl::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_')) return false;
  }
  return true;
}

// Renders a value so that LoadText reads it back unchanged.
std::string Quote(absl::string_view v) {
  bool needs = v.empty() || v.front() == ' ' || v.back() == ' ' || v.front() == '"' ||
               v.find('#') != absl::string_view::npos;
  if (!needs) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

absl::StatusOr<std::string> Unquote(absl::string_view v) {
  if (v.empty() || v.front() != '"') return std::string(v);
  if (v.size() < 2 || v.back() != '"') return absl::InvalidArgumentError("unterminated quote");
  std::string out;
  for (size_t i = 1; i + 1 < v.size(); ++i) {
    char c = v[i];
    if (c == '\\') {
      if (i + 2 >= v.size()) return absl::InvalidArgumentError("dangling backslash");
      c = v[++i];
      if (c != '"' && c != '\\') return absl::InvalidArgumentError("unknown escape");
    }
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<bool> ParseBool(absl::string_view v) {
  std::string s = absl::AsciiStrToLower(v);
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  return absl::InvalidArgumentError(absl::StrCat("'", v, "' is not a boolean (true/false)"));
}

std::string FormatDouble(double d) { return absl::StrFormat("%g", d); }

}  // namespace

absl::Status SplitHostPort(absl::string_view hp, std::string* host, int* port) {
  size_t colon;
  absl::string_view h;
  if (!hp.empty() && hp.front() == '[') {
    size_t close = hp.find(']');
    if (close == absl::string_view::npos || close + 1 >= hp.size() || hp[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("'", hp, "' is not [ipv6]:port"));
    }
    h = hp.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = hp.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", hp, "' is not host:port"));
    }
    h = hp.substr(0, colon);
    if (h.find(':') != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", hp, "': put an IPv6 host in brackets, [addr]:port"));
    }
  }
  if (h.empty()) return absl::InvalidArgumentError(absl::StrCat("'", hp, "' has an empty host"));
  int p = 0;
  absl::string_view ps = hp.substr(colon + 1);
  if (ps.empty() || !absl::SimpleAtoi(ps, &p) || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", hp, "' has no valid port (0..65535)"));
  }
  if (host != nullptr) *host = std::string(h);
  if (port != nullptr) *port = p;
  return absl::OkStatus();
}

absl::Status ValidateHostPort(absl::string_view hp) { return SplitHostPort(hp, nullptr, nullptr); }

ConfigTable::ConfigTable(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void ConfigTable::Add(Entry e) {
  // Keys are chosen by the programmer: a bad or duplicate key is a bug, caught by the tests that
  // construct every table.
  if (!ValidKeyName(e.key) || Find(e.key) != nullptr) {
    std::fprintf(stderr, "kvs config: bad or duplicate key '%s'\n", e.key.c_str());
    std::abort();
  }
  entries_.push_back(std::move(e));
}

ConfigTable::Entry* ConfigTable::Find(absl::string_view key) {
  std::string k = NormalizeKey(key);
  for (Entry& e : entries_) {
    if (e.key == k) return &e;
  }
  return nullptr;
}

const ConfigTable::Entry* ConfigTable::Find(absl::string_view key) const {
  return const_cast<ConfigTable*>(this)->Find(key);
}

void ConfigTable::String(absl::string_view key, std::string* out, absl::string_view help,
                         StringValidator validate) {
  Entry e;
  e.key = std::string(key);
  e.help = std::string(help);
  e.type = "string";
  e.default_text = *out;
  e.parse = [out, validate](const std::string& v, bool) -> absl::Status {
    if (validate) KVS_RETURN_IF_ERROR(validate(v));
    *out = v;
    return absl::OkStatus();
  };
  e.current = [out] { return *out; };
  Add(std::move(e));
}

void ConfigTable::HostPort(absl::string_view key, std::string* out, absl::string_view help,
                           bool allow_empty) {
  Entry e;
  e.key = std::string(key);
  e.help = std::string(help);
  e.type = allow_empty ? "host:port or empty" : "host:port";
  e.default_text = *out;
  e.parse = [out, allow_empty](const std::string& v, bool) -> absl::Status {
    if (!(allow_empty && v.empty())) KVS_RETURN_IF_ERROR(ValidateHostPort(v));
    *out = v;
    return absl::OkStatus();
  };
  e.current = [out] { return *out; };
  Add(std::move(e));
}

void ConfigTable::Int(absl::string_view key, int64_t* out, absl::string_view help, int64_t min,
                      int64_t max) {
  Entry e;
  e.key = std::string(key);
  e.help = std::string(help);
  e.type = absl::StrCat("int [", min, ", ", max, "]");
  e.default_text = absl::StrCat(*out);
  e.parse = [out, min, max](const std::string& v, bool) -> absl::Status {
    int64_t x = 0;
    if (!absl::SimpleAtoi(v, &x)) {
      return absl::InvalidArgumentError(absl::StrCat("'", v, "' is not an integer"));
    }
    if (x < min || x > max) {
      return absl::InvalidArgumentError(
          absl::StrCat(x, " is out of range [", min, ", ", max, "]"));
    }
    *out = x;
    return absl::OkStatus();
  };
  e.current = [out] { return absl::StrCat(*out); };
  Add(std::move(e));
}

void ConfigTable::Double(absl::string_view key, double* out, absl::string_view help, double min,
                         double max) {
  Entry e;
  e.key = std::string(key);
  e.help = std::string(help);
  e.type = absl::StrCat("number [", FormatDouble(min), ", ", FormatDouble(max), "]");
  e.default_text = FormatDouble(*out);
  e.parse = [out, min, max](const std::string& v, bool) -> absl::Status {
    double x = 0;
    if (!absl::SimpleAtod(v, &x) || !std::isfinite(x)) {
      return absl::InvalidArgumentError(absl::StrCat("'", v, "' is not a finite number"));
    }
    if (x < min || x > max) {
      return absl::InvalidArgumentError(absl::StrCat(FormatDouble(x), " is out of range [",
                                                     FormatDouble(min), ", ", FormatDouble(max),
                                                     "]"));
    }
    *out = x;
    return absl::OkStatus();
  };
  e.current = [out] { return FormatDouble(*out); };
  Add(std::move(e));
}

void ConfigTable::Bool(absl::string_view key, bool* out, absl::string_view help) {
  Entry e;
  e.key = std::string(key);
  e.help = std::string(help);
  e.type = "bool";
  e.is_bool = true;
  e.default_text = *out ? "true" : "false";
  e.parse = [out](const std::string& v, bool) -> absl::Status {
    KVS_ASSIGN_OR_RETURN(*out, ParseBool(v));
    return absl::OkStatus();
  };
  e.current = [out] { return std::string(*out ? "true" : "false"); };
  Add(std::move(e));
}

void ConfigTable::Enum(absl::string_view key, std::string* out, std::vector<std::string> allowed,
                       absl::string_view help) {
  Entry e;
  e.key = std::string(key);
  e.help = std::string(help);
  e.type = absl::StrCat("one of ", absl::StrJoin(allowed, "|"));
  e.default_text = *out;
  e.parse = [out, allowed](const std::string& v, bool) -> absl::Status {
    for (const std::string& a : allowed) {
      if (v == a) {
        *out = v;
        return absl::OkStatus();
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("'", v, "' is not one of ", absl::StrJoin(allowed, ", ")));
  };
  e.current = [out] { return *out; };
  Add(std::move(e));
}

void ConfigTable::StringList(absl::string_view key, std::vector<std::string>* out,
                             absl::string_view help, StringValidator validate) {
  Entry e;
  e.key = std::string(key);
  e.help = std::string(help);
  e.type = "comma-separated list";
  e.is_list = true;
  e.default_text = absl::StrJoin(*out, ",");
  e.parse = [out, validate](const std::string& v, bool append) -> absl::Status {
    std::vector<std::string> items;
    if (!v.empty()) {
      for (absl::string_view part : absl::StrSplit(v, ',')) {
        std::string item(absl::StripAsciiWhitespace(part));
        if (item.empty()) return absl::InvalidArgumentError(absl::StrCat("'", v, "' has an empty element"));
        if (validate) KVS_RETURN_IF_ERROR(validate(item));
        items.push_back(std::move(item));
      }
    }
    if (!append) out->clear();
    out->insert(out->end(), items.begin(), items.end());
    return absl::OkStatus();
  };
  e.current = [out] { return absl::StrJoin(*out, ","); };
  Add(std::move(e));
}

void ConfigTable::HostPortList(absl::string_view key, std::vector<std::string>* out,
                               absl::string_view help) {
  StringList(key, out, help, [](const std::string& v) { return ValidateHostPort(v); });
  entries_.back().type = "comma-separated host:port list";
}

absl::Status ConfigTable::Set(absl::string_view key, absl::string_view value,
                              absl::string_view source, bool from_command_line) {
  Entry* e = Find(key);
  if (e == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": unknown key '", key, "' (", program_, " --help lists them)"));
  }
  bool append = from_command_line && e->is_list && e->set_on_command_line;
  absl::Status s = e->parse(std::string(value), append);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e->key, ": ", s.message()));
  }
  e->set = true;
  if (from_command_line) e->set_on_command_line = true;
  return absl::OkStatus();
}

absl::Status ConfigTable::LoadText(absl::string_view text, absl::string_view source) {
  std::vector<std::string> seen;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l.front() == '#') continue;
    std::string where = absl::StrCat(source, ":", line_no);
    size_t eq = l.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected 'key = value'"));
    }
    std::string key = NormalizeKey(absl::StripAsciiWhitespace(l.substr(0, eq)));
    absl::string_view raw = absl::StripAsciiWhitespace(l.substr(eq + 1));
    for (const std::string& k : seen) {
      if (k == key) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": key '", key, "' appears twice"));
      }
    }
    seen.push_back(key);
    absl::StatusOr<std::string> value = Unquote(raw);
    if (!value.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", key, ": ", value.status().message()));
    }
    KVS_RETURN_IF_ERROR(Set(key, *value, where));
  }
  return absl::OkStatus();
}

absl::Status ConfigTable::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open config file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read config file ", path));
  return LoadText(ss.str(), path);
}

bool ConfigTable::IsSet(absl::string_view key) const {
  const Entry* e = Find(key);
  return e != nullptr && e->set;
}

bool ConfigTable::HasKey(absl::string_view key) const { return Find(key) != nullptr; }

bool ConfigTable::IsBool(absl::string_view key) const {
  const Entry* e = Find(key);
  return e != nullptr && e->is_bool;
}

std::vector<std::string> ConfigTable::Keys() const {
  std::vector<std::string> keys;
  for (const Entry& e : entries_) keys.push_back(e.key);
  return keys;
}

std::string ConfigTable::Dump() const {
  std::string out = absl::StrCat("# ", program_, " configuration (every key; --config loads this format)\n");
  for (const Entry& e : entries_) {
    absl::StrAppend(&out, "\n# ", e.help, "\n# type: ", e.type, "; default: ",
                    e.default_text.empty() ? "\"\"" : Quote(e.default_text), "\n", e.key, " = ",
                    Quote(e.current()), "\n");
  }
  return out;
}

std::string ConfigTable::Usage() const {
  std::string u = absl::StrCat("usage: ", program_, " [--config FILE] [--key value ...]\n", summary_,
                               "\n\n  --config FILE        load keys from FILE first (key = value lines)\n"
                               "  --dump-config        print every key, its default and effective value\n"
                               "  --help               this text\n\noptions (file key = flag name; "
                               "dashes and underscores are interchangeable):\n");
  for (const Entry& e : entries_) {
    std::string flag = e.key;
    for (char& c : flag) {
      if (c == '_') c = '-';
    }
    absl::StrAppend(&u, absl::StrFormat("  --%-26s %s\n  %-28s [%s; default: %s]\n",
                                        flag + (e.is_bool ? "" : " V"), e.help, "", e.type,
                                        e.default_text.empty() ? "\"\"" : e.default_text));
  }
  return u;
}

absl::StatusOr<CommandLine> Load(ConfigTable& table, int argc, const char* const* argv) {
  CommandLine cl;
  // The config file first, wherever --config appears, so that flags override it.
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (a == "--config") {
      if (i + 1 >= argc) return absl::InvalidArgumentError("--config needs a file");
      if (!cl.config_file.empty()) return absl::InvalidArgumentError("--config given twice");
      cl.config_file = argv[++i];
    } else if (absl::ConsumePrefix(&a, "--config=")) {
      if (!cl.config_file.empty()) return absl::InvalidArgumentError("--config given twice");
      cl.config_file = std::string(a);
    }
  }
  if (!cl.config_file.empty()) KVS_RETURN_IF_ERROR(table.LoadFile(cl.config_file));

  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      cl.help = true;
      continue;
    }
    if (a == "--dump-config" || a == "--dump_config") {
      cl.dump_config = true;
      continue;
    }
    if (a == "--config") {
      ++i;
      continue;
    }
    if (absl::StartsWith(a, "--config=")) continue;
    if (!absl::ConsumePrefix(&a, "--")) {
      cl.positional.emplace_back(a);
      continue;
    }
    std::string key, value;
    bool has_value = false;
    if (size_t eq = a.find('='); eq != absl::string_view::npos) {
      key = NormalizeKey(a.substr(0, eq));
      value = std::string(a.substr(eq + 1));
      has_value = true;
    } else {
      key = NormalizeKey(a);
    }
    if (!table.HasKey(key)) {
      return absl::InvalidArgumentError(absl::StrCat(
          table.program(), ": unknown option --", a.substr(0, a.find('=')), " (see --help)"));
    }
    if (!has_value) {
      if (table.IsBool(key)) {
        value = "true";  // a boolean flag alone; --flag=false turns it off
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", a, " needs a value"));
      }
    }
    KVS_RETURN_IF_ERROR(table.Set(key, value, "command line", /*from_command_line=*/true));
  }
  return cl;
}

}  // namespace kvs::config
