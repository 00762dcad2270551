#include "services/control/grpc_server.h"

#include <condition_variable>
#include <map>
#include <mutex>

#include <grpcpp/ext/proto_server_reflection_plugin.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/config/config.h"

namespace kvs::control {

namespace hpb = ::grpc::health::v1;

// grpc.health.v1.Health: Check and Watch over a status per service name ("" = the server).
class HealthService final : public hpb::Health::Service {
 public:
  explicit HealthService(std::vector<std::string> names) {
    statuses_[""] = hpb::HealthCheckResponse::SERVING;
    for (std::string& n : names) statuses_[n] = hpb::HealthCheckResponse::SERVING;
  }

  void SetServing(bool serving) {
    std::lock_guard<std::mutex> l(mu_);
    if (shut_down_) return;
    for (auto& [name, st] : statuses_) {
      st = serving ? hpb::HealthCheckResponse::SERVING : hpb::HealthCheckResponse::NOT_SERVING;
    }
    ++generation_;
    cv_.notify_all();
  }

  // NOT_SERVING for good; wakes every Watch so that it returns.
  void Shutdown() {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [name, st] : statuses_) st = hpb::HealthCheckResponse::NOT_SERVING;
    shut_down_ = true;
    ++generation_;
    cv_.notify_all();
  }

  grpc::Status Check(grpc::ServerContext*, const hpb::HealthCheckRequest* req,
                     hpb::HealthCheckResponse* resp) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = statuses_.find(req->service());
    if (it == statuses_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
    resp->set_status(it->second);
    return grpc::Status::OK;
  }

  grpc::Status Watch(grpc::ServerContext* ctx, const hpb::HealthCheckRequest* req,
                     grpc::ServerWriter<hpb::HealthCheckResponse>* writer) override {
    uint64_t seen = ~uint64_t{0};
    while (true) {
      hpb::HealthCheckResponse resp;
      bool done;
      {
        std::unique_lock<std::mutex> l(mu_);
        // Wakes on a change, on shutdown, or every 200 ms to notice a cancelled call.
        cv_.wait_for(l, std::chrono::milliseconds(200),
                     [&] { return generation_ != seen || shut_down_; });
        if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
        if (generation_ == seen && !shut_down_) continue;
        seen = generation_;
        auto it = statuses_.find(req->service());
        resp.set_status(it == statuses_.end() ? hpb::HealthCheckResponse::SERVICE_UNKNOWN
                                              : it->second);
        done = shut_down_;
      }
      if (!writer->Write(resp)) return grpc::Status::CANCELLED;
      if (done) return grpc::Status::OK;
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, hpb::HealthCheckResponse::ServingStatus> statuses_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

namespace {

// Linking gRPC::grpc++_reflection registers its server plugin from a static initializer (every
// server then offers reflection). Taking a symbol's address keeps the library linked even under
// --as-needed; calling InitProtoReflectionServerBuilderPlugin() again would register it twice.
[[maybe_unused]] __attribute__((used)) void (*const kKeepReflectionLinked)() = &grpc::reflection::InitProtoReflectionServerBuilderPlugin;

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const std::string& listen,
                                                             std::vector<grpc::Service*> services,
                                                             const GrpcServerOptions& options) {
  std::string host;
  int want_port = 0;
  absl::Status s = config::SplitHostPort(listen, &host, &want_port);
  if (!s.ok()) return s;

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = MakeServerCredentials(options.tls);
  if (!creds.ok()) return creds.status();

  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->health_ = std::make_unique<HealthService>(options.health_service_names);
  server->host_ = host;

  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, *creds, &server->port_);
  for (grpc::Service* svc : services) builder.RegisterService(svc);
  builder.RegisterService(server->health_.get());
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  // gRPC sets SO_REUSEPORT by default: a second daemon on the same port would silently share it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  // Accept the clients' keepalive pings (DefaultChannelArguments) instead of sending GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The server pings idle-but-open calls too, so a vanished client is noticed.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("grpc: cannot listen on ", listen));
  }
  return server;
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

std::string GrpcServer::address() const {
  if (absl::StrContains(host_, ':')) return absl::StrCat("[", host_, "]:", port_);
  return absl::StrCat(host_, ":", port_);
}

void GrpcServer::SetServing(bool serving) {
  if (health_) health_->SetServing(serving);
}

void GrpcServer::Shutdown(absl::Duration drain) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  health_->Shutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + drain));
  server_->Wait();
}

grpc::ChannelArguments DefaultChannelArguments() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(16 << 20);
  return args;
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target) {
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   DefaultChannelArguments());
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target, const TlsOptions& tls) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = MakeChannelCredentials(tls);
  if (!creds.ok()) return creds.status();
  grpc::ChannelArguments args = DefaultChannelArguments();
  if (!tls.server_name_override.empty()) args.SetSslTargetNameOverride(tls.server_name_override);
  return grpc::CreateCustomChannel(target, *creds, args);
}

}  // namespace kvs::control
