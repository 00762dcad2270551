// The gRPC edge of the control plane over a real server on a loopback port, with in-process
// fakes behind it: translation both ways, status mapping, token streaming, cancellation,
// malformed requests, health and reflection.
#include "services/control/grpc_services.h"

#include <grpcpp/generic/generic_stub.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/control/convert.h"
#include "services/control/grpc_server.h"
#include "tests/testing/status_matchers.h"

namespace kvs::control {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

// Scripted decode daemon.
class FakeDecode final : public DecodeApi {
 public:
  std::string target() const override { return "fake"; }
  absl::StatusOr<SessionGrant> OpenSession(const OpenSessionParams& p, absl::Time) override {
    std::lock_guard<std::mutex> l(mu);
    last_open = p;
    if (!open_error.ok()) return open_error;
    SessionGrant g;
    g.session_id = 42;
    g.token.fill(7);
    g.transport = TransportKind::kTcp;
    g.endpoint = "127.0.0.1:1234";
    g.transport_detail = "tcp";
    g.lease_ms = 5000;
    g.codec_params_digest = p.codec_params_digest;
    g.chunk_count = static_cast<uint32_t>(p.geom.layers);
    g.frame_version = 1;
    return g;
  }
  absl::StatusOr<RequestStats> Resume(const ResumeParams& p, const TokenSink& sink, absl::Time) override {
    for (int i = 1; i < p.max_new_tokens || endless; ++i) {
      absl::Status s = sink(TokenPiece{100 + i, absl::StrCat("t", i), i});
      if (!s.ok()) {
        if (!sink_failed.HasBeenNotified()) sink_failed.Notify();
        return s;
      }
    }
    RequestStats st;
    st.generated_tokens = p.max_new_tokens;
    st.finish_reason = "length";
    st.decompress_ms = 1.5;
    st.codec = "identity";
    return st;
  }
  absl::StatusOr<bool> CloseSession(uint64_t id, const transfer::SessionToken&, absl::string_view reason,
                                    absl::Time) override {
    closed_reason = std::string(reason);
    return id == 42;
  }
  absl::StatusOr<ServerInfo> Info(absl::Time) override {
    ServerInfo i;
    i.role = "decode";
    i.model_name = "fake-model";
    i.codecs = {"identity", "uniform_int8"};
    i.frame_version = 1;
    return i;
  }

  std::mutex mu;
  OpenSessionParams last_open;
  absl::Status open_error;
  bool endless = false;
  absl::Notification sink_failed;
  std::string closed_reason;
};

class GrpcServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = std::make_unique<DecodeGrpcService>(&fake_, absl::Minutes(1));
    GrpcServerOptions so;
    so.health_service_names = {"kvshuttle.v1.Decode"};
    KVS_ASSERT_OK_AND_ASSIGN(server_, GrpcServer::Start("127.0.0.1:0", {service_.get()}, so));
    channel_ = MakeChannel(server_->address());
    client_ = std::make_unique<GrpcDecodeClient>(channel_, server_->address());
  }

  FakeDecode fake_;
  std::unique_ptr<DecodeGrpcService> service_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<GrpcDecodeClient> client_;
};

OpenSessionParams SomeOpen() {
  OpenSessionParams p;
  p.request_id = "r1";
  p.model_fingerprint = "abc";
  p.geom = {5, 4, 17, 8};
  p.codec = "uniform_int8";
  p.codec_params_digest = 0x1234;
  p.layers_per_chunk = 1;
  p.transport = TransportKind::kTcp;
  p.frame_version = 1;
  p.lease_ms = 3000;
  return p;
}

TEST_F(GrpcServicesTest, OpenSessionCarriesEveryFieldBothWays) {
  KVS_ASSERT_OK_AND_ASSIGN(SessionGrant g, client_->OpenSession(SomeOpen(), Soon()));
  EXPECT_EQ(g.session_id, 42u);
  EXPECT_EQ(g.token[15], 7);
  EXPECT_EQ(g.endpoint, "127.0.0.1:1234");
  EXPECT_EQ(g.chunk_count, 5u);
  EXPECT_EQ(g.codec_params_digest, 0x1234u);
  std::lock_guard<std::mutex> l(fake_.mu);
  EXPECT_EQ(fake_.last_open.geom, (KvGeometry{5, 4, 17, 8}));
  EXPECT_EQ(fake_.last_open.codec, "uniform_int8");
  EXPECT_EQ(fake_.last_open.model_fingerprint, "abc");
  EXPECT_EQ(fake_.last_open.lease_ms, 3000);
  EXPECT_EQ(fake_.last_open.transport, TransportKind::kTcp);
}

TEST_F(GrpcServicesTest, DomainErrorsKeepTheirCodeAndNameThePeer) {
  fake_.open_error = absl::FailedPreconditionError("model fingerprint mismatch");
  EXPECT_THAT(client_->OpenSession(SomeOpen(), Soon()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("fingerprint mismatch"), HasSubstr(server_->address()))));
  fake_.open_error = absl::ResourceExhaustedError("full");
  EXPECT_THAT(client_->OpenSession(SomeOpen(), Soon()), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("full")));
}

TEST_F(GrpcServicesTest, ResumeStreamsTokensThenFinalStats) {
  ResumeParams p;
  p.session_id = 42;
  p.max_new_tokens = 4;
  std::vector<TokenPiece> got;
  KVS_ASSERT_OK_AND_ASSIGN(RequestStats st, client_->Resume(p, [&](const TokenPiece& t) {
    got.push_back(t);
    return absl::OkStatus();
  }, Soon()));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].token_id, 101);
  EXPECT_EQ(got[2].text, "t3");
  EXPECT_EQ(got[2].index, 3);
  EXPECT_EQ(st.generated_tokens, 4);
  EXPECT_EQ(st.decompress_ms, 1.5);
  EXPECT_EQ(st.finish_reason, "length");
}

TEST_F(GrpcServicesTest, ClientThatStopsReadingCancelsTheServerSide) {
  fake_.endless = true;
  ResumeParams p;
  p.session_id = 42;
  p.max_new_tokens = 2;
  int n = 0;
  absl::StatusOr<RequestStats> st = client_->Resume(p, [&](const TokenPiece&) {
    return ++n < 3 ? absl::OkStatus() : absl::CancelledError("enough");
  }, Soon());
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kCancelled, HasSubstr("enough")));
  // The server's sink fails once the cancellation reaches it; the fake then returns.
  EXPECT_TRUE(fake_.sink_failed.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

TEST_F(GrpcServicesTest, MalformedRequestsAreInvalidArgument) {
  auto stub = ::kvshuttle::v1::Decode::NewStub(channel_);
  {
    ::kvshuttle::v1::CloseSessionRequest req;
    req.set_session_id(42);
    req.set_session_token("short");
    ::kvshuttle::v1::CloseSessionResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub->CloseSession(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("session_token"));
  }
  {
    ::kvshuttle::v1::OpenSessionRequest req;  // no geometry
    req.set_codec("identity");
    ::kvshuttle::v1::OpenSessionResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub->OpenSession(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("geometry"));
  }
  {
    ::kvshuttle::v1::OpenSessionRequest req = ::kvshuttle::v1::OpenSessionRequest();
    ToProto(SomeOpen(), &req);
    req.set_transport(static_cast<::kvshuttle::v1::Transport>(9));
    ::kvshuttle::v1::OpenSessionResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub->OpenSession(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("transport"));
  }
  {
    ::kvshuttle::v1::ResumeRequest req;
    req.set_session_id(42);
    req.set_session_token(std::string(16, 'x'));
    req.set_request_id(std::string(1000, 'r'));
    grpc::ClientContext ctx;
    auto reader = stub->Resume(&ctx, req);
    ::kvshuttle::v1::GenerateResponse resp;
    EXPECT_FALSE(reader->Read(&resp));
    grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("request_id"));
  }
}

TEST_F(GrpcServicesTest, CloseSessionIsIdempotentAndCarriesTheReason) {
  transfer::SessionToken t{};
  KVS_ASSERT_OK_AND_ASSIGN(bool existed, client_->CloseSession(42, t, "client went away", Soon()));
  EXPECT_TRUE(existed);
  EXPECT_EQ(fake_.closed_reason, "client went away");
  KVS_ASSERT_OK_AND_ASSIGN(existed, client_->CloseSession(7, t, "again", Soon()));
  EXPECT_FALSE(existed);
}

TEST_F(GrpcServicesTest, InfoRoundTrips) {
  KVS_ASSERT_OK_AND_ASSIGN(ServerInfo i, client_->Info(Soon()));
  EXPECT_EQ(i.role, "decode");
  EXPECT_EQ(i.model_name, "fake-model");
  EXPECT_THAT(i.codecs, ::testing::ElementsAre("identity", "uniform_int8"));
}

TEST_F(GrpcServicesTest, HealthReportsServingThenNotServing) {
  auto health = ::grpc::health::v1::Health::NewStub(channel_);
  auto check = [&](const std::string& service) {
    ::grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    ::grpc::health::v1::HealthCheckResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = health->Check(&ctx, req, &resp);
    return s.ok() ? static_cast<int>(resp.status()) : -static_cast<int>(s.error_code());
  };
  EXPECT_EQ(check(""), ::grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(check("kvshuttle.v1.Decode"), ::grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(check("no.such.Service"), -grpc::StatusCode::NOT_FOUND);
  server_->SetServing(false);
  EXPECT_EQ(check(""), ::grpc::health::v1::HealthCheckResponse::NOT_SERVING);
}

TEST_F(GrpcServicesTest, ShutdownEndsHealthWatchers) {
  auto health = ::grpc::health::v1::Health::NewStub(channel_);
  ::grpc::health::v1::HealthCheckRequest req;
  grpc::ClientContext ctx;
  auto reader = health->Watch(&ctx, req);
  ::grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(reader->Read(&resp));
  EXPECT_EQ(resp.status(), ::grpc::health::v1::HealthCheckResponse::SERVING);
  server_->Shutdown(absl::Seconds(5));
  std::vector<int> seen;
  while (reader->Read(&resp)) seen.push_back(resp.status());
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), ::grpc::health::v1::HealthCheckResponse::NOT_SERVING);
}

// Lists services through server reflection (v1alpha) with a hand-encoded request on a generic
// bidi call: ServerReflectionRequest{list_services: ""} is field 7, an empty string.
std::string ReflectionListServices(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(Soon()));
  grpc::CompletionQueue cq;
  void* tag;
  bool ok;
  auto next = [&] { return cq.Next(&tag, &ok) && ok; };
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  if (!next()) return "";
  const char req_bytes[] = {0x3a, 0x00};
  grpc::Slice slice(req_bytes, sizeof req_bytes);
  grpc::ByteBuffer req(&slice, 1);
  call->Write(req, reinterpret_cast<void*>(2));
  if (!next()) return "";
  call->WritesDone(reinterpret_cast<void*>(3));
  if (!next()) return "";
  grpc::ByteBuffer resp;
  call->Read(&resp, reinterpret_cast<void*>(4));
  std::string out;
  if (next()) {
    std::vector<grpc::Slice> slices;
    if (resp.Dump(&slices).ok()) {
      for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  next();
  return out;
}

TEST_F(GrpcServicesTest, ReflectionListsTheServices) {
  std::string listing = ReflectionListServices(channel_);
  EXPECT_THAT(listing, HasSubstr("kvshuttle.v1.Decode"));
  EXPECT_THAT(listing, HasSubstr("grpc.health.v1.Health"));
}

TEST(GrpcServer, BusyAddressIsUnavailable) {
  FakeDecode fake;
  DecodeGrpcService service(&fake, absl::Minutes(1));
  KVS_ASSERT_OK_AND_ASSIGN(auto first, GrpcServer::Start("127.0.0.1:0", {&service}));
  DecodeGrpcService service2(&fake, absl::Minutes(1));
  EXPECT_THAT(GrpcServer::Start(first->address(), {&service2}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot listen")));
}

TEST(GrpcDecodeClient, DeadPeerIsUnavailableWithinTheConnectTimeout) {
  // Bind and close a port so nothing listens there.
  FakeDecode fake;
  DecodeGrpcService service(&fake, absl::Minutes(1));
  std::string addr;
  {
    KVS_ASSERT_OK_AND_ASSIGN(auto s, GrpcServer::Start("127.0.0.1:0", {&service}));
    addr = s->address();
  }
  DecodeClientOptions o;
  o.connect_timeout = absl::Milliseconds(300);
  GrpcDecodeClient client(MakeChannel(addr), addr, o);
  EXPECT_THAT(client.OpenSession(SomeOpen(), absl::Now() + absl::Seconds(30)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(addr)));
}

TEST(Convert, GenerateRequestValidation) {
  ::kvshuttle::v1::GenerateRequest r;
  r.set_prompt("hi");
  r.add_prompt_token_ids(1);
  EXPECT_THAT(FromProto(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not both")));
  r.clear_prompt_token_ids();
  r.set_max_new_tokens(5);
  r.set_pipelined(false);
  r.set_chat(true);
  KVS_ASSERT_OK_AND_ASSIGN(GenerateParams p, FromProto(r));
  EXPECT_EQ(p.prompt, "hi");
  EXPECT_EQ(p.max_new_tokens, 5);
  ASSERT_TRUE(p.pipelined.has_value());
  EXPECT_FALSE(*p.pipelined);
  EXPECT_TRUE(p.chat);
  r.clear_pipelined();
  KVS_ASSERT_OK_AND_ASSIGN(p, FromProto(r));
  EXPECT_FALSE(p.pipelined.has_value());
}

TEST(Convert, StatsSurviveTheRoundTrip) {
  RequestStats s;
  s.codec = "kivi_2bit";
  s.handoff_ms = 3.25;
  s.ttft_ms = 9.5;
  s.wire_bytes = 12345;
  s.ratio = 6.5;
  s.predicted_handoff_ms = 2.0;
  s.finish_reason = "eos";
  s.layer_pipelined = true;
  ::kvshuttle::v1::RequestStats p;
  ToProto(s, &p);
  RequestStats back = FromProto(p);
  EXPECT_EQ(back.codec, "kivi_2bit");
  EXPECT_EQ(back.handoff_ms, 3.25);
  EXPECT_EQ(back.ttft_ms, 9.5);
  EXPECT_EQ(back.wire_bytes, 12345);
  EXPECT_EQ(back.ratio, 6.5);
  EXPECT_EQ(back.predicted_handoff_ms, 2.0);
  EXPECT_EQ(back.finish_reason, "eos");
  EXPECT_TRUE(back.layer_pipelined);
  EXPECT_FALSE(back.pipelined);
}

}  // namespace
}  // namespace kvs::control
