// kvs-health: a grpc.health.v1 probe for kvs-prefill and kvs-decode (container healthchecks,
// scripts). Asks the daemon at HOST:PORT for the health of one service ("" = the server as a
// whole, the default) and exits 0 when it is SERVING.
//
//   kvs-health 127.0.0.1:50051
//   kvs-health --service kvshuttle.v1.Decode --timeout-ms 2000 10.0.0.2:50052
//   kvs-health --tls-ca ca.pem --tls-cert client.pem --tls-key client.key 10.0.0.2:50052   # (m)TLS
//
// Exit status: 0 SERVING; 1 NOT_SERVING, unknown service or unreachable (the reason on stderr);
// 2 bad options (including unreadable or invalid TLS files).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>

#include "common/cli/args.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/control/grpc_server.h"

int main(int argc, char** argv) {
  kvs::ArgParser p("kvs-health", "grpc.health.v1 Check of a kvshuttle daemon: HOST:PORT; exit 0 when SERVING.");
  std::string service;
  int64_t timeout_ms = 3000;
  bool quiet = false;
  p.AddString("service", &service, "service name to check (\"\" = the whole server)");
  p.AddInt("timeout-ms", &timeout_ms, "deadline of the check, including connecting");
  p.AddBool("quiet", &quiet, "print nothing on success");
  kvs::control::TlsOptions tls;  // any --tls-* flag = TLS (services/control/tls.h)
  p.AddString("tls-ca", &tls.ca_file, "TLS: CA certificates (PEM) that verify the daemon");
  p.AddString("tls-cert", &tls.cert_file, "TLS: client certificate (PEM) for a daemon that requires one (mTLS)");
  p.AddString("tls-key", &tls.key_file, "TLS: private key (PEM) of --tls-cert");
  p.AddString("tls-server-name", &tls.server_name_override,
              "TLS: name the daemon's certificate must carry (default: HOST)");
  if (std::optional<int> rc = p.ParseForMain(argc, argv)) return *rc;
  if (p.positional().size() != 1) {
    std::cerr << "kvs-health: expected exactly one HOST:PORT (see --help)\n";
    return 2;
  }
  // Bounded above so that the deadline below cannot overflow the clock's range.
  constexpr int64_t kMaxTimeoutMs = int64_t{24} * 3600 * 1000;
  if (timeout_ms <= 0 || timeout_ms > kMaxTimeoutMs) {
    std::cerr << "kvs-health: --timeout-ms must be in [1, " << kMaxTimeoutMs << "]\n";
    return 2;
  }
  const std::string target = p.positional()[0];
  if (target.empty() || target.find(':') == std::string::npos) {
    std::cerr << "kvs-health: '" << target << "' is not HOST:PORT\n";
    return 2;
  }

  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = kvs::control::MakeChannel(target, tls);
  if (!channel.ok()) {
    std::cerr << "kvs-health: " << channel.status().message() << "\n";
    return 2;
  }
  auto stub = grpc::health::v1::Health::NewStub(*channel);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  ctx.set_wait_for_ready(true);  // wait (up to the deadline) for the channel to connect
  const grpc::Status s = stub->Check(&ctx, req, &resp);
  const std::string what = service.empty() ? target : target + " (" + service + ")";
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    std::cerr << "kvs-health: " << what << ": no answer within " << timeout_ms
              << " ms (not listening, not reachable, or still starting"
              << (tls.ClientEnabled() ? "; or the TLS handshake failed: check --tls-* against the daemon's certificates"
                                      : "; or the daemon serves TLS: see --tls-ca")
              << ")\n";
    return 1;
  }
  if (!s.ok()) {
    std::cerr << "kvs-health: " << what << ": " << s.error_message() << " (grpc code " << s.error_code() << ")\n";
    return 1;
  }
  const std::string state = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
  if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    std::cerr << "kvs-health: " << what << ": " << state << "\n";
    return 1;
  }
  if (!quiet) std::cout << what << ": " << state << "\n";
  return 0;
}
