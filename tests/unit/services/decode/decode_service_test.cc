// DecodeService in process: the real stories260K model, the real TCP data plane on loopback, a
// fake clock for leases; the KV is sent by a KvSender the test drives.
#include "services/decode/decode_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/runner/generate.h"
#include "services/transfer/pipeline.h"
#include "services/transfer/tcp/tcp_transport.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs::decode {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

absl::Time Soon() { return absl::Now() + absl::Seconds(30); }

class DecodeServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = control::ServingModel::Load(kvs::testing::TestDataDir() + "/models/stories260K.gguf", 1);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  void SetUp() override {
    registry_ = std::make_unique<CodecRegistry>(CodecRegistry::Builtin());
    tcp_ = transfer::CreateTcpTransport({});
    options_.model = "stories260K.gguf";
    options_.reap_interval_ms = 0;  // the test reclaims by hand with the fake clock
    options_.max_sessions = 4;
    options_.max_new_tokens_limit = 64;
    Start();
  }

  void Start() {
    service_.reset();
    DecodeDeps deps;
    deps.model = model_;
    deps.codecs = registry_.get();
    deps.tcp = tcp_.get();
    deps.clock = [this] { return clock_.Now(); };
    deps.version = "test";
    service_ = std::make_unique<DecodeService>(options_, std::move(deps));
  }

  // The prompt's KV as prefill would hand it over.
  struct Prompt {
    std::vector<int32_t> tokens;
    OwnedKv kv;
    std::vector<float> last_logits;
  };
  static Prompt MakePrompt(const std::string& text) {
    Prompt p;
    p.tokens = model_->EncodePrompt(text, false).value();
    PrefillResult pre = model_->model().Prefill(p.tokens).value();
    p.kv = OwnedKv::Zeros(pre.cache.geometry());
    EXPECT_THAT(pre.cache.ExportF16(p.kv.mutable_view()), IsOk());
    p.last_logits = pre.last_logits;
    return p;
  }

  control::OpenSessionParams OpenFor(const Prompt& p, const std::string& codec = "identity") {
    control::OpenSessionParams o;
    o.request_id = "t";
    o.model_fingerprint = model_->fingerprint();
    o.geom = p.kv.geom;
    o.codec = codec;
    o.codec_params_digest = transfer::CodecParamsDigest(*registry_->Create(codec).value());
    o.layers_per_chunk = 1;
    o.transport = control::TransportKind::kTcp;
    o.frame_version = transfer::kFrameVersion;
    return o;
  }

  // Sends the KV as kvs-prefill does; returns the sender's result.
  absl::StatusOr<transfer::TransferStats> SendKv(const control::SessionGrant& g, const Prompt& p,
                                                 const std::string& codec_name) {
    std::unique_ptr<Codec> codec = registry_->Create(codec_name).value();
    transfer::SessionParams sp;
    sp.session_id = g.session_id;
    sp.token = g.token;
    sp.request_id = g.session_id;
    sp.geom = p.kv.geom;
    KVS_ASSIGN_OR_RETURN(transfer::Session s, transfer::NegotiateSession(sp, *codec));
    transfer::FrameGate gate;
    transfer::ConnectionOptions co;
    co.validator = [&gate](const transfer::FrameHeader& h) { return gate.Check(h); };
    co.recv_buffer_bytes = s.max_control_payload_bytes() + 4096;
    KVS_ASSIGN_OR_RETURN(auto conn, tcp_->Connect(g.endpoint, co, absl::Seconds(10)));
    transfer::KvSender sender(conn.get(), &gate, codec.get());
    return sender.Send(s, p.kv.view());
  }

  std::vector<int32_t> LocalGenerate(const Prompt& p, int max_tokens, float temperature = 0, uint64_t seed = 0) {
    PrefillResult pre = model_->model().Prefill(p.tokens).value();
    GenerateOptions go;
    go.max_tokens = max_tokens;
    go.sampling.temperature = temperature;
    go.sampling.seed = seed;
    go.stop_tokens = model_->tokenizer().stop_tokens();
    return Generate(model_->model(), &pre.cache, pre.last_logits, go).value();
  }

  static control::ServingModel* model_;
  std::unique_ptr<CodecRegistry> registry_;
  std::unique_ptr<transfer::Transport> tcp_;
  DecodeOptions options_;
  // The service's clock: read by its threads (the receiver's lease restart), advanced by the test.
  class FakeClock {
   public:
    absl::Time Now() const {
      absl::MutexLock l(&mu_);
      return now_;
    }
    void Advance(absl::Duration d) {
      absl::MutexLock l(&mu_);
      now_ += d;
    }

   private:
    mutable absl::Mutex mu_;
    absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1000000);
  };
  FakeClock clock_;
  std::unique_ptr<DecodeService> service_;
};

control::ServingModel* DecodeServiceTest::model_ = nullptr;

TEST_F(DecodeServiceTest, ResumedTokensEqualLocalGeneration) {
  Prompt p = MakePrompt("Once upon a time");
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(OpenFor(p), Soon()));
  EXPECT_EQ(g.chunk_count, static_cast<uint32_t>(p.kv.geom.layers));
  EXPECT_EQ(service_->active_sessions(), 1);
  KVS_ASSERT_OK_AND_ASSIGN(transfer::TransferStats ts, SendKv(g, p, "identity"));
  EXPECT_EQ(ts.bytes_raw, static_cast<uint64_t>(p.kv.geom.raw_bytes()));

  std::vector<int32_t> want = LocalGenerate(p, 24);
  control::ResumeParams rp;
  rp.session_id = g.session_id;
  rp.token = g.token;
  rp.first_token = want[0];
  rp.max_new_tokens = 24;
  std::vector<int32_t> got = {want[0]};
  KVS_ASSERT_OK_AND_ASSIGN(control::RequestStats st, service_->Resume(rp, [&](const control::TokenPiece& t) {
    EXPECT_EQ(t.index, static_cast<int32_t>(got.size()));
    got.push_back(t.token_id);
    return absl::OkStatus();
  }, Soon()));
  EXPECT_EQ(got, want);
  EXPECT_EQ(st.generated_tokens, static_cast<int64_t>(want.size()));
  EXPECT_EQ(st.codec, "identity");
  EXPECT_EQ(service_->active_sessions(), 0);
}

TEST_F(DecodeServiceTest, SampledContinuationMatchesOneUninterruptedRun) {
  Prompt p = MakePrompt("The cat");
  std::vector<int32_t> want = LocalGenerate(p, 20, /*temperature=*/0.9f, /*seed=*/1234);
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(OpenFor(p), Soon()));
  KVS_ASSERT_OK(SendKv(g, p, "identity").status());
  control::ResumeParams rp;
  rp.session_id = g.session_id;
  rp.token = g.token;
  rp.first_token = want[0];
  rp.max_new_tokens = 20;
  rp.sampling.temperature = 0.9f;
  rp.sampling.seed = 1234;
  std::vector<int32_t> got = {want[0]};
  KVS_ASSERT_OK(service_->Resume(rp, [&](const control::TokenPiece& t) {
    got.push_back(t.token_id);
    return absl::OkStatus();
  }, Soon()).status());
  EXPECT_EQ(got, want);
}

TEST_F(DecodeServiceTest, OpenSessionRefusesWhatItCannotServe) {
  Prompt p = MakePrompt("Once upon a time");
  struct Case {
    std::string name;
    std::function<void(control::OpenSessionParams&)> edit;
    absl::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases = {
      {"fingerprint", [](auto& o) { o.model_fingerprint = "0123"; }, absl::StatusCode::kFailedPrecondition,
       "fingerprint mismatch"},
      {"geometry", [](auto& o) { o.geom.heads += 1; }, absl::StatusCode::kFailedPrecondition, "does not fit model"},
      {"frame version", [](auto& o) { o.frame_version = 99; }, absl::StatusCode::kFailedPrecondition, "frame version"},
      {"unknown codec", [](auto& o) { o.codec = "zip9000"; }, absl::StatusCode::kInvalidArgument, "unknown codec"},
      {"digest", [](auto& o) { o.codec_params_digest ^= 1; }, absl::StatusCode::kFailedPrecondition, "digest"},
      {"no tokens", [](auto& o) { o.geom.tokens = 0; }, absl::StatusCode::kInvalidArgument, "outside [1,"},
      {"too long", [](auto& o) { o.geom.tokens = 1 << 20; }, absl::StatusCode::kInvalidArgument, "context"},
      {"chunking", [](auto& o) { o.layers_per_chunk = 99; }, absl::StatusCode::kInvalidArgument, "layers_per_chunk"},
      {"token split", [](auto& o) { o.tokens_per_chunk = 4; }, absl::StatusCode::kUnimplemented, "token-split"},
      {"ucx", [](auto& o) { o.transport = control::TransportKind::kUcx; }, absl::StatusCode::kFailedPrecondition,
       "not served"},
  };
  for (const Case& c : cases) {
    control::OpenSessionParams o = OpenFor(p);
    c.edit(o);
    EXPECT_THAT(service_->OpenSession(o, Soon()), StatusIs(c.code, HasSubstr(c.message))) << c.name;
  }
  EXPECT_EQ(service_->active_sessions(), 0);
}

TEST_F(DecodeServiceTest, DisallowedCodecIsInvalidArgument) {
  options_.codecs = {"identity"};
  Start();
  Prompt p = MakePrompt("Once upon a time");
  EXPECT_THAT(service_->OpenSession(OpenFor(p, "uniform_int8"), Soon()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not allowed")));
}

TEST_F(DecodeServiceTest, CapacityAndDrainingRefuseNewSessions) {
  options_.max_sessions = 2;
  Start();
  Prompt p = MakePrompt("Once upon a time");
  KVS_ASSERT_OK(service_->OpenSession(OpenFor(p), Soon()).status());
  KVS_ASSERT_OK(service_->OpenSession(OpenFor(p), Soon()).status());
  EXPECT_THAT(service_->OpenSession(OpenFor(p), Soon()),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_sessions")));
  service_->StopAdmitting();
  EXPECT_THAT(service_->OpenSession(OpenFor(p), Soon()), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("draining")));
}

TEST_F(DecodeServiceTest, ResumeChecksSessionTokenAndLimits) {
  Prompt p = MakePrompt("Once upon a time");
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(OpenFor(p), Soon()));
  control::TokenSink sink = [](const control::TokenPiece&) { return absl::OkStatus(); };
  control::ResumeParams rp;
  rp.session_id = g.session_id + 1;
  rp.token = g.token;
  rp.max_new_tokens = 4;
  EXPECT_THAT(service_->Resume(rp, sink, Soon()), StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown")));
  rp.session_id = g.session_id;
  rp.token[0] ^= 1;
  EXPECT_THAT(service_->Resume(rp, sink, Soon()), StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("token")));
  rp.token = g.token;
  rp.max_new_tokens = 65;
  EXPECT_THAT(service_->Resume(rp, sink, Soon()), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_new_tokens")));
  rp.max_new_tokens = 0;
  EXPECT_THAT(service_->Resume(rp, sink, Soon()), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_new_tokens")));
  rp.max_new_tokens = 4;
  rp.first_token = 100000;
  EXPECT_THAT(service_->Resume(rp, sink, Soon()), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocabulary")));
  // None of the refusals consumed the session.
  EXPECT_EQ(service_->active_sessions(), 1);
  KVS_ASSERT_OK_AND_ASSIGN(bool existed, service_->CloseSession(g.session_id, g.token, "test", Soon()));
  EXPECT_TRUE(existed);
  KVS_ASSERT_OK_AND_ASSIGN(existed, service_->CloseSession(g.session_id, g.token, "again", Soon()));
  EXPECT_FALSE(existed);
}

TEST_F(DecodeServiceTest, ExpiredLeaseIsReclaimed) {
  Prompt p = MakePrompt("Once upon a time");
  control::OpenSessionParams o = OpenFor(p);
  o.lease_ms = 500;
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(o, Soon()));
  EXPECT_EQ(g.lease_ms, 500);
  clock_.Advance(absl::Milliseconds(499));
  EXPECT_EQ(service_->ReclaimExpired(), 0);
  clock_.Advance(absl::Milliseconds(2));
  EXPECT_EQ(service_->ReclaimExpired(), 1);
  EXPECT_EQ(service_->active_sessions(), 0);
  control::ResumeParams rp;
  rp.session_id = g.session_id;
  rp.token = g.token;
  rp.max_new_tokens = 4;
  EXPECT_THAT(service_->Resume(rp, [](const control::TokenPiece&) { return absl::OkStatus(); }, Soon()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("expired")));
}

TEST_F(DecodeServiceTest, LeaseRestartsWhenTheKvHasArrived) {
  Prompt p = MakePrompt("Once upon a time");
  control::OpenSessionParams o = OpenFor(p);
  o.lease_ms = 500;
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(o, Soon()));
  clock_.Advance(absl::Milliseconds(400));
  KVS_ASSERT_OK(SendKv(g, p, "identity").status());  // returns once decode has the KV
  clock_.Advance(absl::Milliseconds(400));                    // 800 ms after OpenSession, 400 after the KV
  EXPECT_EQ(service_->ReclaimExpired(), 0);
  clock_.Advance(absl::Milliseconds(101));
  EXPECT_EQ(service_->ReclaimExpired(), 1);
}

TEST_F(DecodeServiceTest, LeaseIsCappedAtTheMaximum) {
  options_.max_lease_ms = 2000;
  Start();
  Prompt p = MakePrompt("Once upon a time");
  control::OpenSessionParams o = OpenFor(p);
  o.lease_ms = 100000;
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(o, Soon()));
  EXPECT_EQ(g.lease_ms, 2000);
}

TEST_F(DecodeServiceTest, SenderLostMidTransferFailsResumeWithUnavailable) {
  Prompt p = MakePrompt("Once upon a time");
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(OpenFor(p), Soon()));
  {
    // Connect, then vanish without sending a frame.
    transfer::FrameGate gate;
    transfer::ConnectionOptions co;
    co.validator = [&gate](const transfer::FrameHeader& h) { return gate.Check(h); };
    KVS_ASSERT_OK_AND_ASSIGN(auto conn, tcp_->Connect(g.endpoint, co, absl::Seconds(10)));
    conn->Close();
  }
  control::ResumeParams rp;
  rp.session_id = g.session_id;
  rp.token = g.token;
  rp.max_new_tokens = 4;
  EXPECT_THAT(service_->Resume(rp, [](const control::TokenPiece&) { return absl::OkStatus(); }, Soon()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("prefill peer lost")));
  EXPECT_EQ(service_->active_sessions(), 0);
}

TEST_F(DecodeServiceTest, ResumeWaitsNoLongerThanItsDeadline) {
  Prompt p = MakePrompt("Once upon a time");
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(OpenFor(p), Soon()));
  control::ResumeParams rp;
  rp.session_id = g.session_id;
  rp.token = g.token;
  rp.max_new_tokens = 4;
  EXPECT_THAT(service_->Resume(rp, [](const control::TokenPiece&) { return absl::OkStatus(); },
                               absl::Now() + absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("did not arrive")));
}

TEST_F(DecodeServiceTest, ClientGoneStopsGeneration) {
  Prompt p = MakePrompt("Once upon a time");
  KVS_ASSERT_OK_AND_ASSIGN(control::SessionGrant g, service_->OpenSession(OpenFor(p), Soon()));
  KVS_ASSERT_OK(SendKv(g, p, "identity").status());
  control::ResumeParams rp;
  rp.session_id = g.session_id;
  rp.token = g.token;
  rp.first_token = LocalGenerate(p, 1)[0];
  rp.max_new_tokens = 64;
  int n = 0;
  EXPECT_THAT(service_->Resume(rp, [&](const control::TokenPiece&) {
    return ++n < 3 ? absl::OkStatus() : absl::CancelledError("client went away");
  }, Soon()), StatusIs(absl::StatusCode::kCancelled, HasSubstr("went away")));
  EXPECT_EQ(n, 3);
  EXPECT_EQ(service_->active_sessions(), 0);
}

TEST_F(DecodeServiceTest, InfoDescribesTheModel) {
  KVS_ASSERT_OK_AND_ASSIGN(control::ServerInfo i, service_->Info(Soon()));
  EXPECT_EQ(i.role, "decode");
  EXPECT_EQ(i.model_fingerprint, model_->fingerprint());
  EXPECT_EQ(i.layers, 5);
  EXPECT_EQ(i.kv_heads, 4);
  EXPECT_EQ(i.head_dim, 8);
  EXPECT_THAT(i.codecs, ::testing::Contains("uniform_int8"));
}

}  // namespace
}  // namespace kvs::decode
