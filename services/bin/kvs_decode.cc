// kvs-decode: the decode daemon. Admits KV sessions from kvs-prefill over gRPC, receives the KV
// over the data plane (TCP or UCX), and resumes generation, streaming tokens back.
//
//   kvs-decode --listen 127.0.0.1:50052 --model tests/data/models/stories260K.gguf
//   kvs-decode --config deploy/config/decode.conf --metrics-port 9102
//   kvs-decode --dump-config            # every key, its default and effective value
//
// SIGTERM/SIGINT: stop admitting sessions (health NOT_SERVING), let sessions finish for up to
// drain_timeout_ms, then stop.
#include <unistd.h>

#include <iostream>
#include <memory>
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
#include "services/decode/decode_options.h"
#include "services/decode/decode_service.h"
#include "services/metrics/metrics.h"

namespace {

int Fail(const absl::Status& s, int code) {
  std::cerr << "kvs-decode: " << s.message() << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  kvs::control::BlockTerminationSignals();
  kvs::decode::DecodeOptions o;
  kvs::config::ConfigTable table("kvs-decode",
                                 "KV-cache decode daemon: receives prompt KV from kvs-prefill and generates.");
  kvs::decode::BindDecodeOptions(table, &o);
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
  if (absl::Status s = kvs::decode::ValidateDecodeOptions(o); !s.ok()) return Fail(s, 2);
  kvs::ConfigureLogging(o.log_level);
  kvs::control::TlsOptions tls{o.tls_cert, o.tls_key, o.tls_ca, o.tls_require_client_cert, ""};
  // The PEM files are checked now, before the model loads (GrpcServer::Start reads them again).
  if (absl::Status s = kvs::control::MakeServerCredentials(tls).status(); !s.ok()) return Fail(s, 2);

  kvs::CodecRegistry registry = kvs::CodecRegistry::Builtin();
  for (const std::string& c : o.codecs) {
    if (!registry.Create(c).ok()) return Fail(absl::InvalidArgumentError("codecs: unknown codec " + c), 2);
  }
  absl::StatusOr<std::unique_ptr<kvs::control::ServingModel>> model =
      kvs::control::ServingModel::Load(o.model, static_cast<int>(o.threads));
  if (!model.ok()) return Fail(model.status(), 1);

  kvs::control::DataPlaneOptions dp;
  dp.bind_host = o.data_host;
  dp.advertise_host = o.data_advertise_host;
  dp.ucx_tls = o.ucx_tls;
  dp.ucx_net_devices = o.ucx_net_devices;
  dp.tcp_user_timeout_ms = static_cast<int>(o.tcp_user_timeout_ms);
  dp.require_lane = o.require_lane;
  std::unique_ptr<kvs::transfer::Transport> tcp, ucx;
  for (const std::string& t : o.transports) {
    absl::StatusOr<std::unique_ptr<kvs::transfer::Transport>> tr =
        t == "tcp" ? kvs::control::CreateTcpDataPlane(dp) : kvs::control::CreateUcxDataPlane(dp);
    if (!tr.ok()) return Fail(tr.status(), 1);
    (t == "tcp" ? tcp : ucx) = *std::move(tr);
  }
  std::unique_ptr<kvs::ThreadPool> codec_pool;
  if (o.codec_threads > 0) codec_pool = std::make_unique<kvs::ThreadPool>(static_cast<int>(o.codec_threads));

  kvs::metrics::Registry metrics_registry;
  kvs::decode::DecodeMetrics metrics(metrics_registry);
  kvs::decode::DecodeDeps deps;
  deps.model = model->get();
  deps.codecs = &registry;
  deps.tcp = tcp.get();
  deps.ucx = ucx.get();
  deps.codec_pool = codec_pool.get();
  deps.metrics = &metrics;
  deps.version = absl::StrCat("kvshuttle ", KVS_VERSION);
  kvs::decode::DecodeService service(o, std::move(deps));
  kvs::control::DecodeGrpcService grpc_service(&service, absl::Milliseconds(o.max_call_timeout_ms));
  kvs::control::GrpcServerOptions so;
  so.health_service_names = {"kvshuttle.v1.Decode"};
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
  KVS_LOG_INFO("kvs-decode serving model {} ({}, fingerprint {}) on {} ({}); data plane {}; metrics {}",
               (*model)->name(), (*model)->config().ToString(), (*model)->fingerprint(), grpc_addr,
               tls.DescribeServer(), absl::StrJoin(o.transports, ","), metrics_addr);
  if (!o.ready_file.empty()) {
    absl::Status s = kvs::control::WriteReadyFile(
        o.ready_file, {{"grpc", grpc_addr}, {"metrics", metrics_addr}, {"pid", std::to_string(getpid())}});
    if (!s.ok()) return Fail(s, 1);
  }
  std::cout << "kvs-decode ready grpc=" << grpc_addr << " metrics=" << metrics_addr << std::endl;

  const int sig = kvs::control::WaitForTerminationSignal();
  KVS_LOG_INFO("kvs-decode: signal {}: draining (up to {} ms, {} sessions)", sig, o.drain_timeout_ms,
               service.active_sessions());
  service.StopAdmitting();
  (*server)->SetServing(false);
  const bool drained = kvs::control::WaitUntil([&] { return service.active_sessions() == 0; },
                                               absl::Milliseconds(o.drain_timeout_ms));
  if (!drained) KVS_LOG_WARN("kvs-decode: {} sessions still open after the drain timeout", service.active_sessions());
  (*server)->Shutdown(absl::Seconds(1));
  service.Shutdown();
  KVS_LOG_INFO("kvs-decode: stopped");
  return 0;
}
