#include "services/prefill/prefill_options.h"

#include "absl/strings/str_cat.h"

namespace kvs::prefill {

void BindPrefillOptions(config::ConfigTable& t, PrefillOptions* o) {
  t.HostPort("listen", &o->listen, "gRPC listen address (port 0 = any free port)");
  t.HostPortList("decode", &o->decode, "kvs-decode peers, host:port (required; repeat or comma-separate)");
  t.String("model", &o->model, "GGUF model file (required; the same file as the decode peers)");
  t.Enum("transport", &o->transport, {"tcp", "ucx"}, "data-plane transport");
  t.Int("tcp_streams", &o->tcp_streams, "parallel TCP connections per transfer", 1, 64);
  t.String("data_host", &o->data_host, "local address of the data plane");
  t.String("ucx_tls", &o->ucx_tls, "UCX transports (UCX_TLS syntax); empty = UCX's choice");
  t.Int("tcp_user_timeout_ms", &o->tcp_user_timeout_ms,
        "TCP data plane: a peer silent this long fails the transfer (TCP_USER_TIMEOUT)", 100, 3600000);
  t.String("ucx_net_devices", &o->ucx_net_devices, "UCX network devices (UCX_NET_DEVICES syntax); empty = all");
  t.String("require_lane", &o->require_lane,
           "refuse transfers over any other lane (tcp, posix, sysv, cma, self); empty = any");
  t.String("codec", &o->codec, "codec when a request names none: a registry name or auto");
  t.StringList("codecs", &o->codecs, "codecs requests may use; empty = all registered");
  t.StringList("auto_codecs", &o->auto_codecs, "codecs the auto policy chooses among");
  t.Double("auto_initial_gbps", &o->auto_initial_gbps,
           "auto: link rate assumed for a peer before any transfer was measured (Gbit/s)", 0.001, 1e5);
  t.String("auto_quality_file", &o->auto_quality_file,
           "auto: kvs-bench quality --json report of the served model; empty = fixed quality classes");
  t.Bool("pipelined", &o->pipelined, "chunk pipeline (encode | wire | decode overlap) by default");
  t.Bool("layer_pipelined", &o->layer_pipelined,
         "send each layer's chunk while later layers of the prefill compute");
  t.Int("layers_per_chunk", &o->layers_per_chunk, "layers per data-plane chunk", 1, 1 << 16);
  t.Int("encode_buffers", &o->encode_buffers, "encode buffers per transfer", 1, 1024);
  t.Int("max_new_tokens_limit", &o->max_new_tokens_limit, "largest max_new_tokens per request", 1,
        1 << 20);
  t.Int("max_prompt_tokens", &o->max_prompt_tokens, "longest prompt in tokens; 0 = context - 1", 0,
        1 << 24);
  t.Int("max_prompt_bytes", &o->max_prompt_bytes, "longest prompt text in bytes", 1, 64 << 20);
  t.Int("max_inflight", &o->max_inflight, "concurrent Generate calls", 1, 65536);
  t.Int("request_timeout_ms", &o->request_timeout_ms, "cap on a Generate call's deadline", 1, 86400000);
  t.Int("rpc_timeout_ms", &o->rpc_timeout_ms, "deadline of each control RPC to a decode peer", 1,
        3600000);
  t.Int("connect_timeout_ms", &o->connect_timeout_ms,
        "how long to wait for a (re)connecting decode peer before UNAVAILABLE", 1, 3600000);
  t.Int("lease_ms", &o->lease_ms, "session lease asked of decode; 0 = decode's default", 0, 3600000);
  t.Double("link_gbps", &o->link_gbps,
           "link rate for the analytic prediction (Gbit/s); 0 = the transfer's measured rate", 0, 1e5);
  t.Int("threads", &o->threads, "libtorch intra-op threads; 0 = hardware concurrency", 0, 1024);
  t.Int("codec_threads", &o->codec_threads, "codec encode threads; 0 = the sender thread", 0, 1024);
  t.Int("drain_timeout_ms", &o->drain_timeout_ms, "SIGTERM: time running calls get to finish", 0,
        3600000);
  t.Int("metrics_port", &o->metrics_port, "Prometheus /metrics port; -1 = off, 0 = any free port",
        -1, 65535);
  t.String("metrics_host", &o->metrics_host, "address /metrics binds to");
  t.Enum("log_level", &o->log_level, {"error", "warn", "info", "debug", "trace"}, "log level");
  t.String("ready_file", &o->ready_file, "write bound addresses here once serving (tests, scripts)");
  t.String("tls_cert", &o->tls_cert, "gRPC server TLS certificate chain (PEM); empty = insecure");
  t.String("tls_key", &o->tls_key, "private key (PEM) of tls_cert");
  t.String("tls_ca", &o->tls_ca, "CA certificates (PEM) that verify client certificates");
  t.Bool("tls_require_client_cert", &o->tls_require_client_cert,
         "mTLS: refuse clients without a certificate from tls_ca");
  t.String("decode_tls_ca", &o->decode_tls_ca,
           "TLS to the decode peers: CA certificates (PEM) that verify them; empty with no decode_tls_* = insecure");
  t.String("decode_tls_cert", &o->decode_tls_cert, "TLS to the decode peers: client certificate (PEM, mTLS)");
  t.String("decode_tls_key", &o->decode_tls_key, "TLS to the decode peers: private key (PEM) of decode_tls_cert");
  t.String("decode_tls_server_name", &o->decode_tls_server_name,
           "TLS to the decode peers: name their certificates must carry (default: the host in decode)");
}

absl::Status ValidatePrefillOptions(const PrefillOptions& o) {
  if (o.model.empty()) return absl::InvalidArgumentError("model: a GGUF model file is required (--model)");
  if (o.decode.empty()) {
    return absl::InvalidArgumentError("decode: at least one kvs-decode peer is required (--decode HOST:PORT)");
  }
  if (o.codec.empty()) return absl::InvalidArgumentError("codec must not be empty (a codec name or auto)");
  if (o.tls_cert.empty() != o.tls_key.empty()) return absl::InvalidArgumentError("tls_cert and tls_key go together");
  if (o.tls_cert.empty() && (!o.tls_ca.empty() || o.tls_require_client_cert)) {
    return absl::InvalidArgumentError("tls_ca / tls_require_client_cert need tls_cert and tls_key");
  }
  if (o.tls_require_client_cert && o.tls_ca.empty()) {
    return absl::InvalidArgumentError("tls_require_client_cert needs tls_ca (the CA of the client certificates)");
  }
  if (o.decode_tls_cert.empty() != o.decode_tls_key.empty()) {
    return absl::InvalidArgumentError("decode_tls_cert and decode_tls_key go together");
  }
  return absl::OkStatus();
}

}  // namespace kvs::prefill
