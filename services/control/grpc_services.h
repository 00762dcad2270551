// services/control/grpc_services.h — the gRPC edge of both daemons and the gRPC clients.
//
// Server side: DecodeGrpcService / PrefillGrpcService translate kvshuttle.v1 requests into the
// domain types of api.h, call the daemon's DecodeApi / PrefillApi implementation with the call's
// deadline, stream tokens back, and map absl::Status to grpc::Status with ToGrpcStatus. A client
// that goes away cancels the work: the token sink then returns CANCELLED.
//
// Client side: GrpcDecodeClient (used by kvs-prefill) and GrpcPrefillClient (kvs-loadgen, tests)
// implement the same interfaces over a channel. Every call carries a deadline; a lost peer
// surfaces as UNAVAILABLE naming the peer.
//
//   decode::DecodeService service(...);               // implements control::DecodeApi
//   control::DecodeGrpcService grpc_service(&service, /*default_timeout=*/absl::Minutes(5));
//   auto server = control::GrpcServer::Start("127.0.0.1:0", {&grpc_service}).value();
//   control::GrpcDecodeClient client(control::MakeChannel(server->address()), server->address());
//
// Thread-safety: all classes are thread-safe.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "kvshuttle/v1/decode.grpc.pb.h"
#include "kvshuttle/v1/prefill.grpc.pb.h"
#include "services/control/api.h"

namespace kvs::control {

// The deadline a handler works to: the client's, capped at now + `max_timeout` (so that no call
// without a deadline runs forever).
absl::Time CallDeadline(const grpc::ServerContext& ctx, absl::Duration max_timeout);

class DecodeGrpcService final : public ::kvshuttle::v1::Decode::Service {
 public:
  DecodeGrpcService(DecodeApi* impl, absl::Duration max_call_timeout)
      : impl_(impl), max_timeout_(max_call_timeout) {}

  grpc::Status OpenSession(grpc::ServerContext* ctx, const ::kvshuttle::v1::OpenSessionRequest* req,
                           ::kvshuttle::v1::OpenSessionResponse* resp) override;
  grpc::Status Resume(grpc::ServerContext* ctx, const ::kvshuttle::v1::ResumeRequest* req,
                      grpc::ServerWriter<::kvshuttle::v1::GenerateResponse>* writer) override;
  grpc::Status CloseSession(grpc::ServerContext* ctx,
                            const ::kvshuttle::v1::CloseSessionRequest* req,
                            ::kvshuttle::v1::CloseSessionResponse* resp) override;
  grpc::Status Info(grpc::ServerContext* ctx, const ::kvshuttle::v1::InfoRequest* req,
                    ::kvshuttle::v1::InfoResponse* resp) override;

 private:
  DecodeApi* impl_;
  absl::Duration max_timeout_;
};

class PrefillGrpcService final : public ::kvshuttle::v1::Prefill::Service {
 public:
  PrefillGrpcService(PrefillApi* impl, absl::Duration max_call_timeout)
      : impl_(impl), max_timeout_(max_call_timeout) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const ::kvshuttle::v1::GenerateRequest* req,
                        grpc::ServerWriter<::kvshuttle::v1::GenerateResponse>* writer) override;
  grpc::Status Info(grpc::ServerContext* ctx, const ::kvshuttle::v1::InfoRequest* req,
                    ::kvshuttle::v1::InfoResponse* resp) override;

 private:
  PrefillApi* impl_;
  absl::Duration max_timeout_;
};

struct DecodeClientOptions {
  // OpenSession waits this long for the peer's channel to (re)connect before failing with
  // UNAVAILABLE (a restarted peer is used as soon as it is back).
  absl::Duration connect_timeout = absl::Seconds(2);
};

class GrpcDecodeClient final : public DecodeApi {
 public:
  GrpcDecodeClient(std::shared_ptr<grpc::Channel> channel, std::string target,
                   DecodeClientOptions options = {});
  std::string target() const override { return target_; }
  absl::StatusOr<SessionGrant> OpenSession(const OpenSessionParams& p, absl::Time deadline) override;
  absl::StatusOr<RequestStats> Resume(const ResumeParams& p, const TokenSink& sink,
                                      absl::Time deadline) override;
  absl::StatusOr<bool> CloseSession(uint64_t session_id, const transfer::SessionToken& token,
                                    absl::string_view reason, absl::Time deadline) override;
  absl::StatusOr<ServerInfo> Info(absl::Time deadline) override;

 private:
  absl::Status PeerStatus(const grpc::Status& s, absl::string_view what) const;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<::kvshuttle::v1::Decode::Stub> stub_;
  std::string target_;
  DecodeClientOptions options_;
};

class GrpcPrefillClient final : public PrefillApi {
 public:
  GrpcPrefillClient(std::shared_ptr<grpc::Channel> channel, std::string target);
  std::string target() const override { return target_; }
  absl::StatusOr<RequestStats> Generate(const GenerateParams& p, const TokenSink& sink,
                                        absl::Time deadline) override;
  absl::StatusOr<ServerInfo> Info(absl::Time deadline) override;
  // grpc.health.v1 Check of "" (true when SERVING).
  absl::StatusOr<bool> Healthy(absl::Time deadline);

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<::kvshuttle::v1::Prefill::Stub> stub_;
  std::string target_;
};

}  // namespace kvs::control
