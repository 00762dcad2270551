#include "services/metrics/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "prometheus/text_serializer.h"
#include "common/log/log.h"

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

MetricsServer::MetricsServer(int listen_fd, int wake_fd[2], std::string host, int port,
                             Registry& registry)
    : listen_fd_(listen_fd), wake_fd_{wake_fd[0], wake_fd[1]}, host_(std::move(host)), port_(port),
      registry_(registry) {
  thread_ = std::thread([this] { Serve(); });
}

MetricsServer::~MetricsServer() {
  const char b = 1;
  if (::write(wake_fd_[1], &b, 1) < 0) {
    KVS_LOG_WARN("metrics server: cannot wake the server thread: {}", std::strerror(errno));
  }
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_[0]);
  ::close(wake_fd_[1]);
}

std::string MetricsServer::address() const {
  if (absl::StrContains(host_, ':')) return absl::StrCat("[", host_, "]:", port_);
  return absl::StrCat(host_, ":", port_);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& host,
                                                                    int port, Registry& registry) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_text = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot resolve ", host, ": ", gai_strerror(rc)));
  }
  int fd = -1;
  std::string last_error = "no address";
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
      last_error = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", host, ":", port, ": ", last_error));
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  const int bound = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                             : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("metrics: pipe: ", std::strerror(errno)));
  }
  return std::unique_ptr<MetricsServer>(new MetricsServer(fd, wake, host, bound, registry));
}

void MetricsServer::Serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      KVS_LOG_ERROR("metrics server: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents & POLLIN) {
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      Handle(c);
      ::close(c);
    }
  }
}

void MetricsServer::Handle(int fd) {
  // A scraper's request fits in one small read; give it a second, then give up on it.
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string req;
  char buf[2048];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 16384) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    req.append(buf, static_cast<size_t>(n));
  }
  std::string status = "200 OK", body, type = "text/plain; version=0.0.4; charset=utf-8";
  if (absl::StartsWith(req, "GET /metrics ") || absl::StartsWith(req, "GET /metrics?")) {
    body = registry_.Serialize();
  } else if (absl::StartsWith(req, "GET ")) {
    status = "404 Not Found";
    body = "see /metrics\n";
    type = "text/plain";
  } else {
    status = "405 Method Not Allowed";
    body = "GET /metrics only\n";
    type = "text/plain";
  }
  const std::string resp = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                        "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
  size_t off = 0;
  while (off < resp.size()) {
    const ssize_t n = ::send(fd, resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
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
