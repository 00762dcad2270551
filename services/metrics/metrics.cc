#include "services/metrics/metrics.h"

#include <exception>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"

namespace kvs::metrics {

Registry::Registry() : registry_(std::make_shared<prometheus::Registry>()) {}

std::string Registry::Serialize() const {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(registry_->Collect());
}

CounterFamily::CounterFamily(Registry& r, const std::string& name, const std::string& help)
    : family_(&prometheus::BuildCounter().Name(name).Help(help).Register(r.prom())) {}

GaugeFamily::GaugeFamily(Registry& r, const std::string& name, const std::string& help)
    : family_(&prometheus::BuildGauge().Name(name).Help(help).Register(r.prom())) {}

HistogramFamily::HistogramFamily(Registry& r, const std::string& name, const std::string& help,
                                 std::vector<double> buckets)
    : family_(&prometheus::BuildHistogram().Name(name).Help(help).Register(r.prom())),
      buckets_(std::move(buckets)) {}

std::vector<double> LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
}

std::vector<double> ByteBuckets() {
  std::vector<double> b;
  for (double x = 1024; x <= 4.0 * 1024 * 1024 * 1024; x *= 4) b.push_back(x);
  return b;
}

std::vector<double> RatioBuckets() { return {1, 1.5, 2, 3, 4, 6, 8, 12, 16, 32, 64}; }

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, std::string host,
                             int port)
    : exposer_(std::move(exposer)), host_(std::move(host)), port_(port) {}

MetricsServer::~MetricsServer() = default;

std::string MetricsServer::address() const {
  if (absl::StrContains(host_, ':')) return absl::StrCat("[", host_, "]:", port_);
  return absl::StrCat(host_, ":", port_);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& host,
                                                                    int port, Registry& registry) {
  std::string bind = absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                                  : absl::StrCat(host, ":", port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // One civetweb worker thread is plenty for a scrape endpoint.
    exposer = std::make_unique<prometheus::Exposer>(bind, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", bind, ": ", e.what()));
  }
  exposer->RegisterCollectable(registry.shared());
  std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("metrics: no listening port for ", bind));
  }
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(exposer), host, ports[0]));
}

// ---- exposition format check ------------------------------------------------------------------

namespace {

bool IsMetricName(absl::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = absl::ascii_isalpha(c) || c == '_' || c == ':' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

bool IsLabelName(absl::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = absl::ascii_isalpha(c) || c == '_' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

bool IsSampleValue(absl::string_view s) {
  if (s == "NaN" || s == "+Inf" || s == "-Inf") return true;
  double d;
  return absl::SimpleAtod(s, &d);
}

// Parses `{a="x",b="y"}` at the start of `*rest`; leaves the remainder in *rest.
absl::Status ParseLabels(absl::string_view* rest, std::vector<std::string>* names) {
  absl::string_view r = *rest;
  r.remove_prefix(1);  // '{'
  while (true) {
    if (!r.empty() && r.front() == '}') {
      r.remove_prefix(1);
      break;
    }
    size_t eq = r.find('=');
    if (eq == absl::string_view::npos) return absl::InvalidArgumentError("label without '='");
    absl::string_view name = r.substr(0, eq);
    if (!IsLabelName(name)) return absl::InvalidArgumentError(absl::StrCat("bad label name '", name, "'"));
    names->emplace_back(name);
    r.remove_prefix(eq + 1);
    if (r.empty() || r.front() != '"') return absl::InvalidArgumentError("label value not quoted");
    r.remove_prefix(1);
    bool closed = false;
    while (!r.empty()) {
      char c = r.front();
      r.remove_prefix(1);
      if (c == '\\') {
        if (r.empty() || (r.front() != '\\' && r.front() != '"' && r.front() != 'n')) {
          return absl::InvalidArgumentError("bad escape in label value");
        }
        r.remove_prefix(1);
      } else if (c == '"') {
        closed = true;
        break;
      } else if (c == '\n') {
        return absl::InvalidArgumentError("newline in label value");
      }
    }
    if (!closed) return absl::InvalidArgumentError("unterminated label value");
    if (!r.empty() && r.front() == ',') {
      r.remove_prefix(1);
      continue;
    }
    if (r.empty() || r.front() != '}') return absl::InvalidArgumentError("expected ',' or '}'");
  }
  *rest = r;
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckExpositionFormat(absl::string_view text) {
  if (!text.empty() && text.back() != '\n') {
    return absl::InvalidArgumentError("exposition does not end with a newline");
  }
  absl::flat_hash_map<std::string, std::string> types;  // family -> type
  absl::flat_hash_set<std::string> sampled;             // families with samples seen
  std::string current;                                  // family of the last TYPE line
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    auto fail = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": ", why, ": ", line));
    };
    if (line.front() == '#') {
      std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() >= 2 && (parts[1] == "HELP" || parts[1] == "TYPE")) {
        if (parts.size() < 3 || !IsMetricName(parts[2])) return fail("bad metric name");
        if (parts[1] == "TYPE") {
          std::string name(parts[2]);
          if (parts.size() < 4) return fail("TYPE without a type");
          absl::string_view t = parts[3];
          if (t != "counter" && t != "gauge" && t != "histogram" && t != "summary" &&
              t != "untyped") {
            return fail("unknown type");
          }
          if (types.contains(name)) return fail("second TYPE for a family");
          if (sampled.contains(name)) return fail("TYPE after the family's samples");
          types[name] = std::string(t);
          current = name;
        }
      }
      continue;  // other comments are allowed
    }
    // A sample: name[{labels}] value [timestamp]
    size_t name_end = line.find_first_of("{ ");
    if (name_end == absl::string_view::npos) return fail("sample without a value");
    absl::string_view name = line.substr(0, name_end);
    if (!IsMetricName(name)) return fail("bad metric name");
    absl::string_view rest = line.substr(name_end);
    std::vector<std::string> label_names;
    if (rest.front() == '{') {
      absl::Status s = ParseLabels(&rest, &label_names);
      if (!s.ok()) return fail(s.message());
    }
    if (rest.empty() || rest.front() != ' ') return fail("no space before the value");
    rest.remove_prefix(1);
    std::vector<absl::string_view> vals = absl::StrSplit(rest, ' ');
    if (vals.empty() || vals.size() > 2 || !IsSampleValue(vals[0])) return fail("bad sample value");
    if (vals.size() == 2) {
      int64_t ts;
      if (!absl::SimpleAtoi(vals[1], &ts)) return fail("bad timestamp");
    }
    // Which family is this sample of?
    std::string family(name);
    if (!types.contains(family)) {
      for (absl::string_view suffix : {"_bucket", "_sum", "_count"}) {
        if (absl::EndsWith(name, suffix)) {
          std::string base(name.substr(0, name.size() - suffix.size()));
          auto it = types.find(base);
          if (it != types.end() && (it->second == "histogram" || it->second == "summary")) {
            family = base;
            if (suffix == "_bucket" && it->second == "histogram") {
              bool has_le = false;
              for (const std::string& l : label_names) has_le |= (l == "le");
              if (!has_le) return fail("histogram bucket without le");
            }
          }
        }
      }
    }
    if (types.contains(family) && family != current) return fail("sample outside its family's block");
    sampled.insert(family);
  }
  return absl::OkStatus();
}

}  // namespace kvs::metrics
