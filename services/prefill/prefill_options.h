// services/prefill/prefill_options.h — kvs-prefill's configuration: every key, its meaning and
// its default. services/bin/kvs_prefill.cc loads it (defaults < --config FILE < flags);
// `kvs-prefill --dump-config` prints it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/config/config.h"

namespace kvs::prefill {

struct PrefillOptions {
  // gRPC listen address (Prefill service, health, reflection). Port 0 picks a free port.
  std::string listen = "127.0.0.1:50051";
  // Decode peers (host:port of kvs-decode). Required: at least one.
  std::vector<std::string> decode;
  // GGUF model file (the same file the decode peers serve: their fingerprints must match).
  std::string model;
  // Data-plane transport: tcp or ucx.
  std::string transport = "tcp";
  // Parallel TCP connections per transfer.
  int64_t tcp_streams = 1;
  // Local address for the data plane (UCX worker / TCP source); empty = any.
  std::string data_host = "127.0.0.1";
  // UCX transports (UCX_TLS syntax); empty = UCX's choice.
  std::string ucx_tls;
  // TCP data plane: unacknowledged data older than this fails the transfer (a silent peer).
  int64_t tcp_user_timeout_ms = 5000;
  // UCX network devices (UCX_NET_DEVICES syntax, e.g. "eth0" or "mlx5_0:1"); empty = all.
  std::string ucx_net_devices;
  // Refuse to transfer over any other lane (tcp, posix, sysv, cma, self); empty = any.
  std::string require_lane;
  // Codec when a request names none: a registry name or "auto".
  std::string codec = "identity";
  // Codecs requests may name (and "auto" may pick); empty = every registered codec.
  std::vector<std::string> codecs;
  // "auto": candidates (empty = every allowed codec) and the link rate assumed before any
  // transfer to a peer was measured (decimal Gbit/s; after that, the EWMA of measured goodput).
  std::vector<std::string> auto_codecs = {"identity",   "lossless_lz4", "uniform_int8", "fp8_e4m3",
                                          "mixed_k8v4", "uniform_int4", "cachegen",     "kivi_2bit"};
  double auto_initial_gbps = 10;
  // "auto": measured quality of the served model (a `kvs-bench quality --json` report, e.g.
  // deploy/quality/SmolLM2-135M-Instruct.Q4_1.json); its model must be the served one. Empty =
  // fixed quality classes (logged): lossy codecs then meet no min_token_agreement floor.
  std::string auto_quality_file;
  // Chunk pipeline by default (a chunk is on the wire while the next is encoded and the previous
  // decoded); false = encode all, send all, decode all (the comparison baseline).
  bool pipelined = true;
  // Layer-pipelined handoff: the prefill forward hands each layer's K and V to the data plane as
  // soon as it is computed, so a layer's chunk leaves while later layers compute. false = the
  // whole forward first, then every chunk (same code path, all layers marked ready at the end).
  // Needs `pipelined` (the sequential baseline sends after the forward either way).
  bool layer_pipelined = true;
  // Layers per chunk (the pipeline's unit).
  int64_t layers_per_chunk = 1;
  // Encode buffers per transfer (bounds sender memory).
  int64_t encode_buffers = 3;
  // Request limits.
  int64_t max_new_tokens_limit = 1024;
  int64_t max_prompt_tokens = 0;  // 0 = the model's context - 1
  int64_t max_prompt_bytes = 1 << 20;
  int64_t max_inflight = 64;      // concurrent Generate calls (beyond: RESOURCE_EXHAUSTED)
  // Deadlines: cap on a Generate call; per control RPC to a decode peer; peer (re)connect wait;
  // data-plane connect.
  int64_t request_timeout_ms = 600000;
  int64_t rpc_timeout_ms = 10000;
  int64_t connect_timeout_ms = 2000;
  // Session lease asked of decode (0 = decode's default).
  int64_t lease_ms = 0;
  // Link rate for the analytic prediction in the stats (decimal Gbit/s); 0 = this transfer's
  // measured wire rate.
  double link_gbps = 0;
  // Threads: libtorch intra-op (0 = hardware), codec encode pool (0 = none: the sender thread).
  int64_t threads = 0;
  int64_t codec_threads = 0;
  // On SIGTERM: stop admitting, let running calls finish for up to this long.
  int64_t drain_timeout_ms = 30000;
  // Prometheus /metrics: -1 = off, 0 = a free port (logged), else the port; on metrics_host.
  int64_t metrics_port = -1;
  std::string metrics_host = "127.0.0.1";
  std::string log_level = "info";
  // When set, the bound addresses are written here (key=value lines) once serving.
  std::string ready_file;
  // TLS of the gRPC server (PEM files; services/control/tls.h): tls_cert + tls_key turn it on;
  // tls_ca verifies client certificates, which tls_require_client_cert makes mandatory (mTLS).
  std::string tls_cert, tls_key, tls_ca;
  bool tls_require_client_cert = false;
  // TLS of the channels to the decode peers: decode_tls_ca verifies them (any decode_tls_* key
  // turns TLS on); decode_tls_cert + decode_tls_key are presented for mTLS; decode_tls_server_name
  // is the name checked against their certificates instead of the host in `decode`.
  std::string decode_tls_ca, decode_tls_cert, decode_tls_key, decode_tls_server_name;
};

void BindPrefillOptions(config::ConfigTable& table, PrefillOptions* o);
absl::Status ValidatePrefillOptions(const PrefillOptions& o);

}  // namespace kvs::prefill
