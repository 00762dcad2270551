#include "services/decode/decode_options.h"

#include "absl/strings/str_cat.h"

namespace kvs::decode {

void BindDecodeOptions(config::ConfigTable& t, DecodeOptions* o) {
  t.HostPort("listen", &o->listen, "gRPC listen address (port 0 = any free port)");
  t.String("model", &o->model, "GGUF model file (required)");
  t.StringList("transports", &o->transports, "data-plane transports served: tcp, ucx",
               [](const std::string& v) {
                 if (v == "tcp" || v == "ucx") return absl::OkStatus();
                 return absl::InvalidArgumentError(absl::StrCat("'", v, "' is not tcp or ucx"));
               });
  t.String("data_host", &o->data_host, "bind address of the per-session data-plane listeners");
  t.String("data_advertise_host", &o->data_advertise_host,
           "host prefill dials for the data plane (empty = data_host)");
  t.String("ucx_tls", &o->ucx_tls, "UCX transports (UCX_TLS syntax); empty = UCX's choice");
  t.Int("tcp_user_timeout_ms", &o->tcp_user_timeout_ms,
        "TCP data plane: a peer silent this long fails the transfer (TCP_USER_TIMEOUT)", 100, 3600000);
  t.String("ucx_net_devices", &o->ucx_net_devices, "UCX network devices (UCX_NET_DEVICES syntax); empty = all");
  t.String("require_lane", &o->require_lane,
           "refuse transfers over any other lane (tcp, posix, sysv, cma, self); empty = any");
  t.StringList("codecs", &o->codecs, "codecs sessions may use; empty = all registered");
  t.Int("max_sessions", &o->max_sessions, "sessions admitted at once", 1, 65536);
  t.Int("lease_ms", &o->lease_ms, "default session lease (OpenSession -> Resume)", 1, 3600000);
  t.Int("max_lease_ms", &o->max_lease_ms, "longest lease a session may ask for", 1, 3600000);
  t.Int("reap_interval_ms", &o->reap_interval_ms, "lease reaper period; 0 = no reaper", 0, 60000);
  t.Int("max_new_tokens_limit", &o->max_new_tokens_limit, "largest max_new_tokens per request", 1,
        1 << 20);
  t.Int("max_context", &o->max_context, "context served; 0 = the model's trained context", 0,
        1 << 24);
  t.Int("recv_buffers", &o->recv_buffers, "receive buffers per session connection", 1, 4096);
  t.Bool("pipelined", &o->pipelined, "decode chunks as they arrive (false: after all arrived)");
  t.Int("threads", &o->threads, "libtorch intra-op threads; 0 = hardware concurrency", 0, 1024);
  t.Int("codec_threads", &o->codec_threads, "codec decode threads; 0 = the receiver thread", 0, 1024);
  t.Int("max_call_timeout_ms", &o->max_call_timeout_ms, "cap on any call's deadline", 1,
        86400000);
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
}

absl::Status ValidateDecodeOptions(const DecodeOptions& o) {
  if (o.model.empty()) return absl::InvalidArgumentError("model: a GGUF model file is required (--model)");
  if (o.transports.empty()) return absl::InvalidArgumentError("transports: at least one of tcp, ucx");
  if (o.lease_ms > o.max_lease_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease_ms ", o.lease_ms, " exceeds max_lease_ms ", o.max_lease_ms));
  }
  if (o.data_host.empty()) return absl::InvalidArgumentError("data_host must not be empty");
  if (o.tls_cert.empty() != o.tls_key.empty()) return absl::InvalidArgumentError("tls_cert and tls_key go together");
  if (o.tls_cert.empty() && (!o.tls_ca.empty() || o.tls_require_client_cert)) {
    return absl::InvalidArgumentError("tls_ca / tls_require_client_cert need tls_cert and tls_key");
  }
  if (o.tls_require_client_cert && o.tls_ca.empty()) {
    return absl::InvalidArgumentError("tls_require_client_cert needs tls_ca (the CA of the client certificates)");
  }
  return absl::OkStatus();
}

}  // namespace kvs::decode
