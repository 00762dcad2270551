#include "services/control/grpc_services.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/control/convert.h"
#include "services/control/grpc_status.h"

namespace kvs::control {

namespace pb = ::kvshuttle::v1;

absl::Time CallDeadline(const grpc::ServerContext& ctx, absl::Duration max_timeout) {
  absl::Time cap = absl::Now() + max_timeout;
  absl::Time client = absl::FromChrono(ctx.deadline());
  return client < cap ? client : cap;
}

namespace {

// No exception may escape a handler (STYLE.md): anything thrown becomes INTERNAL.
template <typename F>
grpc::Status Guard(absl::string_view method, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    KVS_LOG_ERROR("{}: unexpected exception: {}", std::string(method), e.what());
    return grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat(method, ": ", e.what()));
  }
}

// A sink that writes tokens to a server stream; CANCELLED once the client is gone.
template <typename Writer>
TokenSink WriterSink(grpc::ServerContext* ctx, Writer* writer) {
  return [ctx, writer](const TokenPiece& t) -> absl::Status {
    if (ctx->IsCancelled()) return absl::CancelledError("the client cancelled the call");
    pb::GenerateResponse resp;
    ToProto(t, resp.mutable_token());
    if (!writer->Write(resp)) return absl::CancelledError("the client went away");
    return absl::OkStatus();
  };
}

void SetDeadline(grpc::ClientContext* ctx, absl::Time deadline) {
  if (deadline != absl::InfiniteFuture()) ctx->set_deadline(absl::ToChronoTime(deadline));
}

}  // namespace

// ---- Decode (server) ---------------------------------------------------------------------------

grpc::Status DecodeGrpcService::OpenSession(grpc::ServerContext* ctx,
                                            const pb::OpenSessionRequest* req,
                                            pb::OpenSessionResponse* resp) {
  return Guard("OpenSession", [&] {
    absl::StatusOr<OpenSessionParams> p = FromProto(*req);
    if (!p.ok()) return ToGrpcStatus(p.status());
    absl::StatusOr<SessionGrant> g = impl_->OpenSession(*p, CallDeadline(*ctx, max_timeout_));
    if (!g.ok()) return ToGrpcStatus(g.status());
    ToProto(*g, resp);
    return grpc::Status::OK;
  });
}

grpc::Status DecodeGrpcService::Resume(grpc::ServerContext* ctx, const pb::ResumeRequest* req,
                                       grpc::ServerWriter<pb::GenerateResponse>* writer) {
  return Guard("Resume", [&] {
    absl::StatusOr<ResumeParams> p = FromProto(*req);
    if (!p.ok()) return ToGrpcStatus(p.status());
    absl::StatusOr<RequestStats> stats =
        impl_->Resume(*p, WriterSink(ctx, writer), CallDeadline(*ctx, max_timeout_));
    if (!stats.ok()) return ToGrpcStatus(stats.status());
    pb::GenerateResponse final_msg;
    ToProto(*stats, final_msg.mutable_final());
    if (!writer->Write(final_msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    return grpc::Status::OK;
  });
}

grpc::Status DecodeGrpcService::CloseSession(grpc::ServerContext* ctx,
                                             const pb::CloseSessionRequest* req,
                                             pb::CloseSessionResponse* resp) {
  return Guard("CloseSession", [&] {
    absl::StatusOr<transfer::SessionToken> token = TokenFromBytes(req->session_token());
    if (!token.ok()) return ToGrpcStatus(token.status());
    if (req->reason().size() > 1024) {
      return ToGrpcStatus(absl::InvalidArgumentError("reason is longer than 1024 bytes"));
    }
    absl::StatusOr<bool> existed = impl_->CloseSession(req->session_id(), *token, req->reason(),
                                                       CallDeadline(*ctx, max_timeout_));
    if (!existed.ok()) return ToGrpcStatus(existed.status());
    resp->set_existed(*existed);
    return grpc::Status::OK;
  });
}

grpc::Status DecodeGrpcService::Info(grpc::ServerContext* ctx, const pb::InfoRequest*,
                                     pb::InfoResponse* resp) {
  return Guard("Info", [&] {
    absl::StatusOr<ServerInfo> info = impl_->Info(CallDeadline(*ctx, max_timeout_));
    if (!info.ok()) return ToGrpcStatus(info.status());
    ToProto(*info, resp);
    return grpc::Status::OK;
  });
}

// ---- Prefill (server) --------------------------------------------------------------------------

grpc::Status PrefillGrpcService::Generate(grpc::ServerContext* ctx, const pb::GenerateRequest* req,
                                          grpc::ServerWriter<pb::GenerateResponse>* writer) {
  return Guard("Generate", [&] {
    absl::StatusOr<GenerateParams> p = FromProto(*req);
    if (!p.ok()) return ToGrpcStatus(p.status());
    absl::StatusOr<RequestStats> stats =
        impl_->Generate(*p, WriterSink(ctx, writer), CallDeadline(*ctx, max_timeout_));
    if (!stats.ok()) return ToGrpcStatus(stats.status());
    pb::GenerateResponse final_msg;
    ToProto(*stats, final_msg.mutable_final());
    if (!writer->Write(final_msg)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    return grpc::Status::OK;
  });
}

grpc::Status PrefillGrpcService::Info(grpc::ServerContext* ctx, const pb::InfoRequest*,
                                      pb::InfoResponse* resp) {
  return Guard("Info", [&] {
    absl::StatusOr<ServerInfo> info = impl_->Info(CallDeadline(*ctx, max_timeout_));
    if (!info.ok()) return ToGrpcStatus(info.status());
    ToProto(*info, resp);
    return grpc::Status::OK;
  });
}

// ---- Decode (client) ---------------------------------------------------------------------------

GrpcDecodeClient::GrpcDecodeClient(std::shared_ptr<grpc::Channel> channel, std::string target,
                                   DecodeClientOptions options)
    : channel_(std::move(channel)),
      stub_(pb::Decode::NewStub(channel_)),
      target_(std::move(target)),
      options_(options) {}

absl::Status GrpcDecodeClient::PeerStatus(const grpc::Status& s, absl::string_view what) const {
  absl::Status a = FromGrpcStatus(s);
  if (a.ok()) return a;
  if (a.code() == absl::StatusCode::kUnavailable) {
    return absl::UnavailableError(
        absl::StrCat("decode peer ", target_, " unavailable during ", what, ": ", a.message()));
  }
  return absl::Status(a.code(), absl::StrCat("decode peer ", target_, ": ", what, ": ", a.message()));
}

absl::StatusOr<SessionGrant> GrpcDecodeClient::OpenSession(const OpenSessionParams& p,
                                                           absl::Time deadline) {
  pb::OpenSessionRequest req;
  ToProto(p, &req);
  pb::OpenSessionResponse resp;
  grpc::ClientContext ctx;
  // Wait for a (re)connecting peer, but only for connect_timeout: a dead peer fails fast.
  absl::Time connect_deadline = absl::Now() + options_.connect_timeout;
  bool capped = connect_deadline < deadline;
  SetDeadline(&ctx, capped ? connect_deadline : deadline);
  ctx.set_wait_for_ready(true);
  grpc::Status s = stub_->OpenSession(&ctx, req, &resp);
  if (!s.ok() && s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && capped) {
    return absl::UnavailableError(absl::StrCat("decode peer ", target_, " unreachable for ",
                                               absl::FormatDuration(options_.connect_timeout),
                                               " (OpenSession): ", s.error_message()));
  }
  if (!s.ok()) return PeerStatus(s, "OpenSession");
  absl::StatusOr<SessionGrant> g = FromProto(resp);
  if (!g.ok()) {
    return absl::InternalError(
        absl::StrCat("decode peer ", target_, " sent a malformed OpenSession reply: ", g.status().message()));
  }
  return g;
}

absl::StatusOr<RequestStats> GrpcDecodeClient::Resume(const ResumeParams& p, const TokenSink& sink,
                                                      absl::Time deadline) {
  pb::ResumeRequest req;
  ToProto(p, &req);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deadline);
  std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>> reader = stub_->Resume(&ctx, req);
  pb::GenerateResponse resp;
  std::optional<RequestStats> stats;
  absl::Status sink_status;
  while (reader->Read(&resp)) {
    if (resp.has_token()) {
      if (stats.has_value()) continue;  // nothing may follow the final message
      sink_status = sink(FromProto(resp.token()));
      if (!sink_status.ok()) {
        ctx.TryCancel();
        break;
      }
    } else if (resp.has_final()) {
      stats = FromProto(resp.final());
    }
  }
  grpc::Status s = reader->Finish();
  if (!sink_status.ok()) return sink_status;
  if (!s.ok()) return PeerStatus(s, "Resume");
  if (!stats.has_value()) {
    return absl::InternalError(absl::StrCat("decode peer ", target_, ": Resume ended without final stats"));
  }
  return *stats;
}

absl::StatusOr<bool> GrpcDecodeClient::CloseSession(uint64_t session_id,
                                                    const transfer::SessionToken& token,
                                                    absl::string_view reason, absl::Time deadline) {
  pb::CloseSessionRequest req;
  req.set_session_id(session_id);
  req.set_session_token(TokenBytes(token));
  req.set_reason(std::string(reason.substr(0, 1024)));
  pb::CloseSessionResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deadline);
  grpc::Status s = stub_->CloseSession(&ctx, req, &resp);
  if (!s.ok()) return PeerStatus(s, "CloseSession");
  return resp.existed();
}

absl::StatusOr<ServerInfo> GrpcDecodeClient::Info(absl::Time deadline) {
  pb::InfoResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deadline);
  grpc::Status s = stub_->Info(&ctx, pb::InfoRequest(), &resp);
  if (!s.ok()) return PeerStatus(s, "Info");
  return FromProto(resp);
}

// ---- Prefill (client) --------------------------------------------------------------------------

GrpcPrefillClient::GrpcPrefillClient(std::shared_ptr<grpc::Channel> channel, std::string target)
    : channel_(std::move(channel)), stub_(pb::Prefill::NewStub(channel_)), target_(std::move(target)) {}

absl::StatusOr<RequestStats> GrpcPrefillClient::Generate(const GenerateParams& p,
                                                         const TokenSink& sink,
                                                         absl::Time deadline) {
  pb::GenerateRequest req;
  ToProto(p, &req);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deadline);
  std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>> reader = stub_->Generate(&ctx, req);
  pb::GenerateResponse resp;
  std::optional<RequestStats> stats;
  absl::Status sink_status;
  while (reader->Read(&resp)) {
    if (resp.has_token() && !stats.has_value()) {
      if (sink) sink_status = sink(FromProto(resp.token()));
      if (!sink_status.ok()) {
        ctx.TryCancel();
        break;
      }
    } else if (resp.has_final()) {
      stats = FromProto(resp.final());
    }
  }
  grpc::Status s = reader->Finish();
  if (!sink_status.ok()) return sink_status;
  if (!s.ok()) return FromGrpcStatus(s);
  if (!stats.has_value()) return absl::InternalError("Generate ended without final stats");
  return *stats;
}

absl::StatusOr<ServerInfo> GrpcPrefillClient::Info(absl::Time deadline) {
  pb::InfoResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deadline);
  grpc::Status s = stub_->Info(&ctx, pb::InfoRequest(), &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return FromProto(resp);
}

absl::StatusOr<bool> GrpcPrefillClient::Healthy(absl::Time deadline) {
  auto stub = ::grpc::health::v1::Health::NewStub(channel_);
  ::grpc::health::v1::HealthCheckRequest req;
  ::grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, deadline);
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp.status() == ::grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace kvs::control
