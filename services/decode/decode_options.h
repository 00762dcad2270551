// services/decode/decode_options.h — kvs-decode's configuration: every key, its meaning and its
// default, in one struct. services/bin/kvs_decode.cc loads it (defaults < --config FILE < flags)
// with services/config/; `kvs-decode --dump-config` prints it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/config/config.h"

namespace kvs::decode {

struct DecodeOptions {
  // gRPC listen address (Decode service, health, reflection). Port 0 picks a free port.
  std::string listen = "127.0.0.1:50052";
  // GGUF model file. Required.
  std::string model;
  // Data-plane transports served: tcp, ucx or both.
  std::vector<std::string> transports = {"tcp"};
  // Address the per-session data-plane listeners bind to, and the host prefill dials (when
  // advertise_host is empty).
  std::string data_host = "127.0.0.1";
  std::string data_advertise_host;
  // UCX transports (UCX_TLS syntax, e.g. "tcp" or "shm,self"); empty = UCX's default choice.
  std::string ucx_tls;
  // TCP data plane: unacknowledged data older than this fails the transfer (a silent peer).
  int64_t tcp_user_timeout_ms = 5000;
  // UCX network devices (UCX_NET_DEVICES syntax, e.g. "eth0" or "mlx5_0:1"); empty = all.
  std::string ucx_net_devices;
  // Refuse to run a transfer over any other lane ("tcp", "posix", ...); empty = accept any.
  std::string require_lane;
  // Codecs a session may use; empty = every codec of the registry.
  std::vector<std::string> codecs;
  // Sessions admitted at once (beyond: RESOURCE_EXHAUSTED).
  int64_t max_sessions = 64;
  // Lease granted when OpenSession asks for none, and the most a session may ask for.
  int64_t lease_ms = 10000;
  int64_t max_lease_ms = 60000;
  // Reaper period (0: no background reaper).
  int64_t reap_interval_ms = 250;
  // Largest max_new_tokens a Resume may ask for.
  int64_t max_new_tokens_limit = 1024;
  // Context served: 0 = the model's trained context.
  int64_t max_context = 0;
  // Receive buffers per session connection (bounds receiver memory).
  int64_t recv_buffers = 4;
  // Decode each chunk as it arrives (true) or after all arrived (the comparison baseline).
  bool pipelined = true;
  // Threads: libtorch intra-op (0 = hardware), codec decode pool (0 = none: receiver thread).
  int64_t threads = 0;
  int64_t codec_threads = 0;
  // Longest any call may run (a cap on client deadlines).
  int64_t max_call_timeout_ms = 600000;
  // On SIGTERM: stop admitting, let running calls finish for up to this long.
  int64_t drain_timeout_ms = 30000;
  // Prometheus /metrics: -1 = off, 0 = a free port (logged), else the port; on metrics_host.
  int64_t metrics_port = -1;
  std::string metrics_host = "127.0.0.1";
  // error, warn, info, debug, trace.
  std::string log_level = "info";
  // When set, the bound addresses are written here (key=value lines) once serving.
  std::string ready_file;
  // TLS of the gRPC server (PEM files; services/control/tls.h): tls_cert + tls_key turn it on;
  // tls_ca verifies client certificates, which tls_require_client_cert makes mandatory (mTLS).
  std::string tls_cert, tls_key, tls_ca;
  bool tls_require_client_cert = false;
};

// Binds every field to `table` with its help text and validation.
void BindDecodeOptions(config::ConfigTable& table, DecodeOptions* o);
// Cross-field checks after loading (model present, lease bounds, known transports).
absl::Status ValidateDecodeOptions(const DecodeOptions& o);

}  // namespace kvs::decode
