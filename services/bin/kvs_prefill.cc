// kvs-prefill: the client-facing daemon. Tokenizes and prefills prompts, hands each request's KV
// to a kvs-decode peer over the data plane (compressed by the chosen codec), and relays the
// generated tokens with per-request measurements.
//
//   kvs-prefill --listen 127.0.0.1:50051 --decode 127.0.0.1:50052 \
//               --model tests/data/models/stories260K.gguf [--transport ucx] [--codec uniform_int8]
//   kvs-prefill --config deploy/config/prefill.conf --metrics-port 9101
//   kvs-prefill --dump-config
//
// SIGTERM/SIGINT: stop admitting requests (health NOT_SERVING), let running requests finish for
// up to drain_timeout_ms, then stop.
#include <algorithm>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log/log.h"
#include "common/thread_pool/thread_pool.h"
#include "kernels/codec.h"
#include "services/config/config.h"
#include "services/control/daemon.h"
#include "services/control/data_plane.h"
#include "services/control/grpc_server.h"
#include "services/control/grpc_services.h"
#include "services/control/serving_model.h"
#include "services/control/tls.h"
#include "services/metrics/metrics.h"
#include "services/prefill/codec_policy.h"
#include "services/prefill/prefill_options.h"
#include "services/prefill/prefill_service.h"

namespace {

int Fail(const absl::Status& s, int code) {
  std::cerr << "kvs-prefill: " << s.message() << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  kvs::control::BlockTerminationSignals();
  kvs::prefill::PrefillOptions o;
  kvs::config::ConfigTable table("kvs-prefill",
                                 "KV-cache prefill daemon: prefills prompts and hands their KV to kvs-decode.");
  kvs::prefill::BindPrefillOptions(table, &o);
  absl::StatusOr<kvs::config::CommandLine> cl = kvs::config::Load(table, argc, argv);
  if (!cl.ok()) return Fail(cl.status(), 2);
  if (cl->help) {
    std::cout << table.Usage();
    return 0;
  }
  if (cl->dump_config) {
    std::cout << table.Dump();
    return 0;
  }
  if (!cl->positional.empty()) return Fail(absl::InvalidArgumentError("unexpected argument " + cl->positional[0]), 2);
  if (absl::Status s = kvs::prefill::ValidatePrefillOptions(o); !s.ok()) return Fail(s, 2);
  kvs::ConfigureLogging(o.log_level);
  kvs::control::TlsOptions tls{o.tls_cert, o.tls_key, o.tls_ca, o.tls_require_client_cert, ""};
  kvs::control::TlsOptions decode_tls{o.decode_tls_cert, o.decode_tls_key, o.decode_tls_ca, false,
                                      o.decode_tls_server_name};
  // The PEM files are checked now, before the model loads (they are read again where used).
  if (absl::Status s = kvs::control::MakeServerCredentials(tls).status(); !s.ok()) return Fail(s, 2);
  if (absl::Status s = kvs::control::MakeChannelCredentials(decode_tls).status(); !s.ok()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("decode_tls: ", s.message())), 2);
  }

  kvs::CodecRegistry registry = kvs::CodecRegistry::Builtin();
  for (const std::string& c : o.codecs) {
    if (!registry.Create(c).ok()) return Fail(absl::InvalidArgumentError("codecs: unknown codec " + c), 2);
  }
  if (o.codec != "auto" && !registry.Create(o.codec).ok()) {
    return Fail(absl::InvalidArgumentError("codec: unknown codec " + o.codec), 2);
  }
  absl::StatusOr<std::unique_ptr<kvs::control::ServingModel>> model =
      kvs::control::ServingModel::Load(o.model, static_cast<int>(o.threads));
  if (!model.ok()) return Fail(model.status(), 1);

  kvs::control::DataPlaneOptions dp;
  dp.bind_host = o.data_host;
  dp.tcp_streams = static_cast<int>(o.tcp_streams);
  dp.ucx_tls = o.ucx_tls;
  dp.ucx_net_devices = o.ucx_net_devices;
  dp.tcp_user_timeout_ms = static_cast<int>(o.tcp_user_timeout_ms);
  dp.require_lane = o.require_lane;
  absl::StatusOr<std::unique_ptr<kvs::transfer::Transport>> transport =
      o.transport == "tcp" ? kvs::control::CreateTcpDataPlane(dp) : kvs::control::CreateUcxDataPlane(dp);
  if (!transport.ok()) return Fail(transport.status(), 1);
  std::unique_ptr<kvs::ThreadPool> codec_pool;
  if (o.codec_threads > 0) codec_pool = std::make_unique<kvs::ThreadPool>(static_cast<int>(o.codec_threads));

  // The auto policy: a short self-benchmark of the candidates on one chunk of this model's KV.
  std::vector<std::string> candidates;
  for (const std::string& c : o.auto_codecs) {
    if (o.codecs.empty() || std::find(o.codecs.begin(), o.codecs.end(), c) != o.codecs.end()) candidates.push_back(c);
  }
  const kvs::ModelConfig& mc = (*model)->config();
  kvs::KvGeometry chunk{std::min<int64_t>(o.layers_per_chunk, mc.layers), mc.kv_heads,
                        std::min<int64_t>(512, (*model)->max_context() - 1), mc.head_dim};
  // Measured quality of the served model, else the fixed classes.
  std::optional<kvs::prefill::QualityTable> quality;
  if (!o.auto_quality_file.empty()) {
    absl::StatusOr<kvs::prefill::QualityTable> q = kvs::prefill::QualityTable::Load(o.auto_quality_file);
    if (!q.ok()) return Fail(q.status(), 2);
    const std::string served = std::filesystem::path(o.model).filename().string();
    const std::string measured = std::filesystem::path(q->model()).filename().string();
    if (!measured.empty() && measured != served) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("auto_quality_file ", o.auto_quality_file, " measures ",
                                                          measured, ", this kvs-prefill serves ", served)),
                  2);
    }
    KVS_LOG_INFO("auto policy: quality of {} from {} ({} codecs)", served, o.auto_quality_file, q->size());
    quality = *std::move(q);
  } else {
    KVS_LOG_INFO("auto policy: no auto_quality_file; fixed quality classes (lossy codecs meet no "
                 "min_token_agreement floor)");
  }
  absl::StatusOr<std::unique_ptr<kvs::prefill::CodecPolicy>> policy = kvs::prefill::CodecPolicy::Calibrate(
      registry, candidates, chunk, codec_pool.get(), o.auto_initial_gbps, quality ? &*quality : nullptr);
  if (!policy.ok()) {
    if (o.codec == "auto") return Fail(policy.status(), 1);
    KVS_LOG_WARN("auto codec disabled: {}", policy.status().ToString());
  }

  kvs::metrics::Registry metrics_registry;
  kvs::prefill::PrefillMetrics metrics(metrics_registry);
  kvs::prefill::PrefillDeps deps;
  deps.model = model->get();
  deps.codecs = &registry;
  deps.transport = transport->get();
  deps.transport_kind = o.transport == "tcp" ? kvs::control::TransportKind::kTcp : kvs::control::TransportKind::kUcx;
  kvs::control::DecodeClientOptions dco;
  dco.connect_timeout = absl::Milliseconds(o.connect_timeout_ms);
  for (const std::string& addr : o.decode) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = kvs::control::MakeChannel(addr, decode_tls);
    if (!channel.ok()) return Fail(channel.status(), 2);
    deps.peers.push_back({addr, std::make_unique<kvs::control::GrpcDecodeClient>(*channel, addr, dco)});
  }
  deps.policy = policy.ok() ? policy->get() : nullptr;
  deps.codec_pool = codec_pool.get();
  deps.metrics = &metrics;
  deps.version = absl::StrCat("kvshuttle ", KVS_VERSION);
  kvs::prefill::PrefillService service(o, std::move(deps));
  (void)service.CheckPeers(absl::Now() + absl::Milliseconds(o.connect_timeout_ms));

  kvs::control::PrefillGrpcService grpc_service(&service, absl::Milliseconds(o.request_timeout_ms));
  kvs::control::GrpcServerOptions so;
  so.health_service_names = {"kvshuttle.v1.Prefill"};
  so.tls = tls;
  absl::StatusOr<std::unique_ptr<kvs::control::GrpcServer>> server =
      kvs::control::GrpcServer::Start(o.listen, {&grpc_service}, so);
  if (!server.ok()) return Fail(server.status(), 1);
  std::unique_ptr<kvs::metrics::MetricsServer> metrics_server;
  if (o.metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<kvs::metrics::MetricsServer>> ms =
        kvs::metrics::MetricsServer::Start(o.metrics_host, static_cast<int>(o.metrics_port), metrics_registry);
    if (!ms.ok()) return Fail(ms.status(), 1);
    metrics_server = *std::move(ms);
  }

  const std::string grpc_addr = (*server)->address();
  const std::string metrics_addr = metrics_server ? metrics_server->address() : "off";
  KVS_LOG_INFO("kvs-prefill serving model {} (fingerprint {}) on {} ({}); decode peers {} ({}); transport {}; codec {}; "
               "metrics {}",
               (*model)->name(), (*model)->fingerprint(), grpc_addr, tls.DescribeServer(), absl::StrJoin(o.decode, ","),
               decode_tls.DescribeClient(), o.transport, o.codec, metrics_addr);
  if (!o.ready_file.empty()) {
    absl::Status s = kvs::control::WriteReadyFile(
        o.ready_file, {{"grpc", grpc_addr}, {"metrics", metrics_addr}, {"pid", std::to_string(getpid())}});
    if (!s.ok()) return Fail(s, 1);
  }
  std::cout << "kvs-prefill ready grpc=" << grpc_addr << " metrics=" << metrics_addr << std::endl;

  const int sig = kvs::control::WaitForTerminationSignal();
  KVS_LOG_INFO("kvs-prefill: signal {}: draining (up to {} ms, {} requests running)", sig, o.drain_timeout_ms,
               service.inflight());
  service.StopAdmitting();
  (*server)->SetServing(false);
  const bool drained = kvs::control::WaitUntil([&] { return service.inflight() == 0; },
                                               absl::Milliseconds(o.drain_timeout_ms));
  if (!drained) KVS_LOG_WARN("kvs-prefill: {} requests still running after the drain timeout", service.inflight());
  (*server)->Shutdown(absl::Seconds(1));
  KVS_LOG_INFO("kvs-prefill: stopped");
  return 0;
}
