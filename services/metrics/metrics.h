// services/metrics/metrics.h — Prometheus metrics for the daemons, declared as data and injected.
//
// A component lists its metrics once as an X-macro and gets a struct of metric families bound to
// a Registry passed in by its owner (main builds one Registry per process; tests build their
// own). Label values are given at use; a family returns the same series for the same labels.
//
//   #define KVS_DECODE_METRICS(COUNTER, GAUGE, HISTOGRAM) <one entry per line, each line ending in a backslash>
//     COUNTER(kvs_decode_sessions_opened_total, "sessions admitted")
//     GAUGE(kvs_decode_sessions_active, "sessions holding a lease")
//     HISTOGRAM(kvs_decode_decompress_seconds, "KV decompress time", kvs::metrics::LatencyBuckets())
//   KVS_METRICS_STRUCT(DecodeMetrics, KVS_DECODE_METRICS);
//
//   kvs::metrics::Registry registry;
//   DecodeMetrics m(registry);
//   m.kvs_decode_sessions_opened_total.With({{"codec", "identity"}}).Increment();
//   KVS_ASSIGN_OR_RETURN(auto server, kvs::metrics::MetricsServer::Start("127.0.0.1", 0, registry));
//
// Thread-safety: families and series are thread-safe (prometheus-cpp); Registry and MetricsServer
// are built and destroyed by their owner's thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace kvs::metrics {

using Labels = std::map<std::string, std::string>;

// One process's metrics. Not a singleton: main() owns it and passes it by reference.
class Registry {
 public:
  Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  prometheus::Registry& prom() { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared() { return registry_; }
  // The Prometheus text exposition of every metric (what /metrics serves).
  std::string Serialize() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
};

class CounterFamily {
 public:
  CounterFamily(Registry& r, const std::string& name, const std::string& help);
  prometheus::Counter& With(const Labels& labels = {}) { return family_->Add(labels); }

 private:
  prometheus::Family<prometheus::Counter>* family_;
};

class GaugeFamily {
 public:
  GaugeFamily(Registry& r, const std::string& name, const std::string& help);
  prometheus::Gauge& With(const Labels& labels = {}) { return family_->Add(labels); }

 private:
  prometheus::Family<prometheus::Gauge>* family_;
};

class HistogramFamily {
 public:
  HistogramFamily(Registry& r, const std::string& name, const std::string& help,
                  std::vector<double> buckets);
  prometheus::Histogram& With(const Labels& labels = {}) { return family_->Add(labels, buckets_); }

 private:
  prometheus::Family<prometheus::Histogram>* family_;
  prometheus::Histogram::BucketBoundaries buckets_;
};

// Seconds, 100 us .. 60 s, roughly x2.5 apart: RPC and handoff latencies.
std::vector<double> LatencyBuckets();
// Bytes, 1 KiB .. 4 GiB, x4 apart.
std::vector<double> ByteBuckets();
// Dimensionless ratios 1 .. 64.
std::vector<double> RatioBuckets();

// Serves GET /metrics over HTTP/1.x until destroyed: one thread, one request per connection.
// (Not prometheus-cpp's civetweb Exposer: civetweb's worker threads use a fixed small stack that
// glibc refuses once libtorch's large static TLS is loaded into the process.)
class MetricsServer {
 public:
  // port 0 picks a free port (see port()). Fails with UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& host, int port,
                                                              Registry& registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // host:port

 private:
  MetricsServer(int listen_fd, int wake_fd[2], std::string host, int port, Registry& registry);
  void Serve();
  void Handle(int fd);

  int listen_fd_;
  int wake_fd_[2];  // a pipe: writing to [1] stops Serve()
  std::string host_;
  int port_;
  Registry& registry_;
  std::thread thread_;
};

// Checks `text` against the Prometheus text exposition format (version 0.0.4): HELP/TYPE lines,
// metric and label names, label value escaping, sample values, histogram series suffixes, one
// TYPE per family before its samples. Returns INVALID_ARGUMENT naming the first bad line.
absl::Status CheckExpositionFormat(absl::string_view text);

}  // namespace kvs::metrics

// ---- declaring metrics as data --------------------------------------------------------------
#define KVS_METRICS_MEMBER_COUNTER_(name, help) ::kvs::metrics::CounterFamily name;
#define KVS_METRICS_MEMBER_GAUGE_(name, help) ::kvs::metrics::GaugeFamily name;
#define KVS_METRICS_MEMBER_HISTOGRAM_(name, help, buckets) ::kvs::metrics::HistogramFamily name;
#define KVS_METRICS_INIT_COUNTER_(name, help) , name(kvs_registry_, #name, help)
#define KVS_METRICS_INIT_GAUGE_(name, help) , name(kvs_registry_, #name, help)
#define KVS_METRICS_INIT_HISTOGRAM_(name, help, buckets) , name(kvs_registry_, #name, help, buckets)

// Defines `struct Name` with one family member per entry of LIST, constructed from a Registry&.
#define KVS_METRICS_STRUCT(Name, LIST)                                                       \
  struct Name {                                                                              \
    explicit Name(::kvs::metrics::Registry& registry)                                        \
        : kvs_registry_(registry)                                                            \
              LIST(KVS_METRICS_INIT_COUNTER_, KVS_METRICS_INIT_GAUGE_,                       \
                   KVS_METRICS_INIT_HISTOGRAM_) {}                                           \
    ::kvs::metrics::Registry& kvs_registry_;                                                 \
    LIST(KVS_METRICS_MEMBER_COUNTER_, KVS_METRICS_MEMBER_GAUGE_, KVS_METRICS_MEMBER_HISTOGRAM_) \
  }
