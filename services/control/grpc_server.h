// services/control/grpc_server.h — a gRPC server with kvshuttle's standard set-up: the given
// services, grpc.health.v1 (our implementation: NOT_SERVING while draining), server reflection,
// keepalive tuned to find lost peers within seconds, and a draining shutdown.
//
//   control::DecodeGrpcService decode(service);
//   KVS_ASSIGN_OR_RETURN(auto server, control::GrpcServer::Start("127.0.0.1:0", {&decode}));
//   ... server->port() ...
//   server->Shutdown(absl::Seconds(30));   // health NOT_SERVING, in-flight calls finish or are cancelled
//
// No process-wide gRPC settings are touched (health and reflection are added per server).
// Thread-safety: Start/Shutdown from one owner thread; SetServing from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/control/tls.h"

namespace kvs::control {

class HealthService;

struct GrpcServerOptions {
  int max_receive_message_bytes = 16 << 20;  // KV never travels in gRPC messages
  int max_concurrent_streams = 256;
  // Names grpc.health.v1 reports besides "" (e.g. "kvshuttle.v1.Decode").
  std::vector<std::string> health_service_names;
  // TLS / mTLS (tls.h); default insecure. Bad files make Start fail with INVALID_ARGUMENT.
  TlsOptions tls;
};

class GrpcServer {
 public:
  // `listen` is "host:port" (port 0 = any free port). The services must outlive the server.
  // UNAVAILABLE when the address cannot be bound; INVALID_ARGUMENT for bad TLS options or files.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const std::string& listen,
                                                           std::vector<grpc::Service*> services,
                                                           const GrpcServerOptions& options = {});
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // host:port actually bound

  // Health status of "" and every registered service.
  void SetServing(bool serving);
  // Health NOT_SERVING, stop accepting calls, let in-flight calls finish for up to `drain`, then
  // cancel the rest. Idempotent.
  void Shutdown(absl::Duration drain);

 private:
  GrpcServer() = default;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  std::string host_;
  int port_ = 0;
  bool shut_down_ = false;
};

// Channel arguments every kvshuttle client uses: keepalive pings during calls (peer loss within
// seconds on a silent network), fast reconnect after a peer restarts, message size limits.
grpc::ChannelArguments DefaultChannelArguments();
// An insecure channel with DefaultChannelArguments.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target);
// A channel with DefaultChannelArguments and the credentials of `tls` (insecure when no TLS field
// is set; server_name_override as the SSL target name). INVALID_ARGUMENT for bad options or files.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target, const TlsOptions& tls);

}  // namespace kvs::control
