// PrefillService in process with a real DecodeService as its peer (no gRPC): the real
// stories260K model on both sides and the real TCP data plane on loopback.
#include "services/prefill/prefill_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "services/decode/decode_service.h"
#include "services/runner/generate.h"
#include "services/transfer/tcp/tcp_transport.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs::prefill {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

absl::Time Soon() { return absl::Now() + absl::Seconds(60); }

// A DecodeApi that forwards to an in-process DecodeService (not owned), optionally overriding
// what the peer reports or failing calls.
class LocalDecode final : public control::DecodeApi {
 public:
  explicit LocalDecode(control::DecodeApi* impl) : impl_(impl) {}
  std::string target() const override { return "local-decode"; }
  absl::StatusOr<control::SessionGrant> OpenSession(const control::OpenSessionParams& p, absl::Time d) override {
    if (!open_error.ok()) return open_error;
    return impl_->OpenSession(p, d);
  }
  absl::StatusOr<control::RequestStats> Resume(const control::ResumeParams& p, const control::TokenSink& s,
                                               absl::Time d) override {
    return impl_->Resume(p, s, d);
  }
  absl::StatusOr<bool> CloseSession(uint64_t id, const transfer::SessionToken& t, absl::string_view r,
                                    absl::Time d) override {
    return impl_->CloseSession(id, t, r, d);
  }
  absl::StatusOr<control::ServerInfo> Info(absl::Time d) override { return impl_->Info(d); }

  absl::Status open_error;

 private:
  control::DecodeApi* impl_;
};

class PrefillServiceTest : public ::testing::Test {
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
    decode_tcp_ = transfer::CreateTcpTransport({});
    prefill_tcp_ = transfer::CreateTcpTransport({});
    decode::DecodeOptions dopt;
    dopt.model = "x";
    dopt.reap_interval_ms = 0;
    decode::DecodeDeps dd;
    dd.model = model_;
    dd.codecs = registry_.get();
    dd.tcp = decode_tcp_.get();
    dd.on_kv_received = [this](const KvCacheView& kv, absl::Span<const uint8_t> keep) {
      std::lock_guard<std::mutex> l(received_mu_);
      const size_t n = static_cast<size_t>(kv.k.geom.elements());
      received_.push_back({std::vector<uint16_t>(kv.k.data, kv.k.data + n),
                           std::vector<uint16_t>(kv.v.data, kv.v.data + n),
                           std::vector<uint8_t>(keep.begin(), keep.end())});
    };
    decode_ = std::make_unique<decode::DecodeService>(dopt, std::move(dd));
    options_.model = "x";
    options_.decode = {"local-decode"};
    options_.max_new_tokens_limit = 64;
    Start();
  }

  void Start() {
    service_.reset();
    PrefillDeps deps;
    deps.model = model_;
    deps.codecs = registry_.get();
    deps.transport = prefill_tcp_.get();
    auto peer = std::make_unique<LocalDecode>(decode_.get());
    peer_ = peer.get();
    deps.peers.push_back({"local-decode", std::move(peer)});
    if (with_policy_) {
      policy_ = std::make_unique<CodecPolicy>(
          std::vector<CodecProfile>{{"identity", 3, 1.0, 100, 100}, {"uniform_int8", 2, 2.0, 20, 40},
                                    {"kivi_2bit", 0, 6.0, 5, 5}},
          /*initial_gbps=*/1.0);
      deps.policy = policy_.get();
    }
    service_ = std::make_unique<PrefillService>(options_, std::move(deps));
  }

  struct Run {
    absl::StatusOr<control::RequestStats> stats;
    std::vector<int32_t> tokens;
    std::string text;
  };
  Run Generate(control::GenerateParams p) {
    Run r;
    r.stats = service_->Generate(p, [&](const control::TokenPiece& t) {
      EXPECT_EQ(t.index, static_cast<int32_t>(r.tokens.size()));
      r.tokens.push_back(t.token_id);
      r.text += t.text;
      return absl::OkStatus();
    }, Soon());
    return r;
  }

  static control::GenerateParams Params(const std::string& prompt, int max_new, const std::string& codec = "") {
    control::GenerateParams p;
    p.prompt = prompt;
    p.max_new_tokens = max_new;
    p.codec = codec;
    return p;
  }

  std::vector<int32_t> LocalGenerate(const std::string& prompt, int max_tokens, std::string* text = nullptr) {
    std::vector<int32_t> ids = model_->EncodePrompt(prompt, false).value();
    PrefillResult pre = model_->model().Prefill(ids).value();
    GenerateOptions go;
    go.max_tokens = max_tokens;
    go.stop_tokens = model_->tokenizer().stop_tokens();
    std::vector<int32_t> out = kvs::Generate(model_->model(), &pre.cache, pre.last_logits, go).value();
    if (text != nullptr) {
      int32_t prev = ids.back();
      for (int32_t t : out) {
        *text += model_->tokenizer().DecodeToken(prev, t);
        prev = t;
      }
    }
    return out;
  }

  // What the decode side received (KvCacheView bytes and keep mask), per session.
  struct Received {
    std::vector<uint16_t> k, v;
    std::vector<uint8_t> keep;
  };
  std::vector<Received> TakeReceived() {
    std::lock_guard<std::mutex> l(received_mu_);
    return std::move(received_);
  }

  static control::ServingModel* model_;
  std::mutex received_mu_;
  std::vector<Received> received_;
  std::unique_ptr<CodecRegistry> registry_;
  std::unique_ptr<transfer::Transport> decode_tcp_, prefill_tcp_;
  std::unique_ptr<decode::DecodeService> decode_;
  PrefillOptions options_;
  bool with_policy_ = false;
  std::unique_ptr<CodecPolicy> policy_;
  LocalDecode* peer_ = nullptr;
  std::unique_ptr<PrefillService> service_;
};

control::ServingModel* PrefillServiceTest::model_ = nullptr;

TEST_F(PrefillServiceTest, IdentityHandoffReproducesLocalGeneration) {
  std::string want_text;
  std::vector<int32_t> want = LocalGenerate("Once upon a time", 40, &want_text);
  Run r = Generate(Params("Once upon a time", 40, "identity"));
  KVS_ASSERT_OK(r.stats.status());
  EXPECT_EQ(r.tokens, want);
  EXPECT_EQ(r.text, want_text);
  const control::RequestStats& st = *r.stats;
  EXPECT_EQ(st.codec, "identity");
  EXPECT_EQ(st.codec_reason, "requested");
  EXPECT_TRUE(st.pipelined);
  EXPECT_EQ(st.generated_tokens, static_cast<int64_t>(want.size()));
  EXPECT_EQ(st.prompt_tokens, static_cast<int64_t>(model_->EncodePrompt("Once upon a time", false)->size()));
  EXPECT_EQ(st.raw_bytes, model_->config().KvGeometryFor(st.prompt_tokens).raw_bytes());
  EXPECT_GT(st.wire_bytes, st.raw_bytes);  // identity plus frame and payload headers
  EXPECT_EQ(st.chunks, model_->config().layers);
  EXPECT_GT(st.ttft_ms, 0);
  EXPECT_GE(st.total_ms, st.ttft_ms);
  EXPECT_GT(st.handoff_ms, 0);
  EXPECT_EQ(st.decode_peer, "local-decode");
  EXPECT_THAT(st.transport, HasSubstr("tcp"));
  EXPECT_EQ(decode_->active_sessions(), 0);
}

TEST_F(PrefillServiceTest, LayerPipelinedHandoffDeliversTheSameKvBytesAsAfterTheForward) {
  const std::string prompt = "Once upon a time, there was a little dog named Max. He";
  std::vector<int32_t> ids = model_->EncodePrompt(prompt, false).value();
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult pre, model_->model().Prefill(ids));
  std::vector<uint16_t> k, v;
  KVS_ASSERT_OK(pre.cache.ExportF16(&k, &v));
  for (const std::string codec : {"identity", "uniform_int8"}) {
    std::vector<std::vector<int32_t>> tokens;
    for (bool layered : {true, false}) {
      options_.layer_pipelined = layered;
      Start();
      Run r = Generate(Params(prompt, 20, codec));
      KVS_ASSERT_OK(r.stats.status()) << codec << " layered " << layered;
      EXPECT_EQ(r.stats->layer_pipelined, layered) << codec;
      tokens.push_back(r.tokens);
    }
    std::vector<Received> got = TakeReceived();
    ASSERT_EQ(got.size(), 2u) << codec;
    EXPECT_EQ(got[0].k, got[1].k) << codec;  // bit-identical in both modes
    EXPECT_EQ(got[0].v, got[1].v) << codec;
    if (codec == "identity") {
      EXPECT_EQ(got[0].k, k);  // and equal to the local prefill's KV
      EXPECT_EQ(got[0].v, v);
    }
    EXPECT_EQ(tokens[0], tokens[1]) << codec;
  }
}

TEST_F(PrefillServiceTest, PruningCodecResumesWithTheEvictedPositionsMaskedOut) {
  const std::string prompt = "Lily and Ben went to the park. They saw a big red ball and";
  const int kTokens = 24;
  Run r = Generate(Params(prompt, kTokens, "topk_prune_50"));
  KVS_ASSERT_OK(r.stats.status());
  std::vector<Received> got = TakeReceived();
  ASSERT_EQ(got.size(), 1u);

  // Locally: each layer chunk encoded and decoded as the data plane does (one layer per chunk),
  // then generation on the masked cache, and on the zero-filled one.
  std::vector<int32_t> ids = model_->EncodePrompt(prompt, false).value();
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult pre, model_->model().Prefill(ids));
  const KvGeometry g = pre.cache.geometry();
  std::vector<uint16_t> k, v, dk, dv;
  KVS_ASSERT_OK(pre.cache.ExportF16(&k, &v));
  dk.assign(k.size(), 0);
  dv.assign(v.size(), 0);
  const KvCacheView src{{k.data(), g}, {v.data(), g}};
  const MutableKvCacheView dst{{dk.data(), g}, {dv.data(), g}};
  KVS_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Codec> codec, registry_->Create("topk_prune_50"));
  std::vector<uint8_t> keep;
  for (int64_t l = 0; l < g.layers; ++l) {
    KVS_ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> payload, EncodeToVector(*codec, src.Layers(l, l + 1), nullptr));
    std::vector<uint8_t> m(static_cast<size_t>(g.tokens));
    KVS_ASSERT_OK(DecodeFromVector(*codec, payload, dst.Layers(l, l + 1), nullptr, absl::MakeSpan(m)));
    keep.insert(keep.end(), m.begin(), m.end());
  }
  EXPECT_EQ(got[0].keep, keep);
  EXPECT_EQ(got[0].k, dk);
  EXPECT_EQ(std::count(keep.begin(), keep.end(), uint8_t{0}), g.layers * (g.tokens - g.tokens / 2));
  GenerateOptions go;
  go.max_tokens = kTokens;
  go.stop_tokens = model_->tokenizer().stop_tokens();
  KVS_ASSERT_OK_AND_ASSIGN(KvCache masked, model_->model().ImportF16(KvCacheView(dst), keep));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache zeroed, model_->model().ImportF16(KvCacheView(dst)));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> want, kvs::Generate(model_->model(), &masked, pre.last_logits, go));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> zero, kvs::Generate(model_->model(), &zeroed, pre.last_logits, go));
  EXPECT_EQ(r.tokens, want);
  EXPECT_NE(want, zero);  // the prompt is one where masking and zero-filling part ways
}

TEST_F(PrefillServiceTest, SequentialHandoffGivesTheSameTokens) {
  std::vector<int32_t> want = LocalGenerate("Lily wanted to play", 24);
  control::GenerateParams p = Params("Lily wanted to play", 24, "identity");
  p.pipelined = false;
  Run r = Generate(p);
  KVS_ASSERT_OK(r.stats.status());
  EXPECT_FALSE(r.stats->pipelined);
  EXPECT_EQ(r.tokens, want);
}

TEST_F(PrefillServiceTest, LossyCodecAgreesClosely) {
  std::vector<int32_t> want = LocalGenerate("Once upon a time", 32);
  Run r = Generate(Params("Once upon a time", 32, "uniform_int8"));
  KVS_ASSERT_OK(r.stats.status());
  // At most 2 (8 bits of 16), less on this tiny KV where frame and payload headers weigh in.
  EXPECT_GT(r.stats->ratio, 1.0);
  EXPECT_LE(r.stats->ratio, 2.0);
  size_t same = 0;
  for (size_t i = 0; i < std::min(want.size(), r.tokens.size()); ++i) same += want[i] == r.tokens[i];
  const double agreement = static_cast<double>(same) / static_cast<double>(std::max(want.size(), r.tokens.size()));
  RecordProperty("uniform_int8_token_agreement", std::to_string(agreement));
  std::cout << "uniform_int8 token agreement with identity: " << agreement << "\n";
  EXPECT_GE(agreement, 0.5);
  EXPECT_EQ(r.tokens[0], want[0]);  // the first token comes from prefill's own logits
}

TEST_F(PrefillServiceTest, TokenIdPromptsAndOneTokenRequestsWork) {
  std::vector<int32_t> ids = model_->EncodePrompt("Once upon a time", false).value();
  control::GenerateParams p;
  p.prompt_token_ids = ids;
  p.max_new_tokens = 1;
  Run r = Generate(p);
  KVS_ASSERT_OK(r.stats.status());
  EXPECT_EQ(r.tokens.size(), 1u);
  EXPECT_EQ(r.tokens[0], LocalGenerate("Once upon a time", 1)[0]);
  EXPECT_EQ(r.stats->finish_reason, "length");
  EXPECT_EQ(decode_->active_sessions(), 0);  // the unused session was closed
}

TEST_F(PrefillServiceTest, BadRequestsAreInvalidArgument) {
  options_.max_prompt_tokens = 8;
  options_.max_prompt_bytes = 200;
  Start();
  struct Case {
    std::string name;
    control::GenerateParams p;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({"empty prompt", Params("", 8), "prompt is empty"});
  cases.push_back({"zero tokens", Params("Once", 0), "max_new_tokens 0"});
  cases.push_back({"too many tokens", Params("Once", 65), "max_new_tokens 65"});
  cases.push_back({"negative tokens", Params("Once", -3), "max_new_tokens -3"});
  cases.push_back({"unknown codec", Params("Once", 8, "zip9000"), "unknown codec"});
  cases.push_back({"long prompt", Params("one two three four five six seven eight nine ten eleven", 8), "at most 8"});
  cases.push_back({"huge prompt", Params(std::string(500, 'a'), 8), "bytes"});
  {
    control::GenerateParams p = Params("Once", 8);
    p.decode_target = "10.0.0.1:1";
    cases.push_back({"unknown target", p, "not a configured peer"});
  }
  {
    control::GenerateParams p = Params("Once", 8);
    p.sampling.temperature = -1;
    cases.push_back({"temperature", p, "temperature"});
  }
  {
    control::GenerateParams p = Params("Once", 8);
    p.prompt_token_ids = {1, 2};
    cases.push_back({"both", p, "not both"});
  }
  {
    control::GenerateParams p;
    p.prompt_token_ids = {1, 99999};
    p.max_new_tokens = 4;
    cases.push_back({"bad id", p, "vocabulary"});
  }
  {
    control::GenerateParams p = Params("Once", 8);
    p.chat = true;
    cases.push_back({"no chat template", p, "chat template"});
  }
  for (const Case& c : cases) {
    Run r = Generate(c.p);
    EXPECT_THAT(r.stats, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message))) << c.name;
    EXPECT_TRUE(r.tokens.empty()) << c.name;
  }
  EXPECT_EQ(decode_->active_sessions(), 0);
  // And the service still serves.
  Run ok = Generate(Params("Once upon a time", 4));
  KVS_EXPECT_OK(ok.stats.status());
}

TEST_F(PrefillServiceTest, PeerErrorsSurfaceWithTheirCode) {
  peer_->open_error = absl::FailedPreconditionError("model fingerprint mismatch");
  EXPECT_THAT(Generate(Params("Once", 8)).stats,
              StatusIs(absl::StatusCode::kFailedPrecondition, AllOf(HasSubstr("fingerprint"), HasSubstr("local-decode"))));
  peer_->open_error = absl::UnavailableError("connection refused");
  EXPECT_THAT(Generate(Params("Once", 8)).stats, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("connection refused")));
}

TEST_F(PrefillServiceTest, ClientGoneReleasesTheSession) {
  int n = 0;
  absl::StatusOr<control::RequestStats> st = service_->Generate(Params("Once upon a time", 40), [&](const control::TokenPiece&) {
    return ++n < 4 ? absl::OkStatus() : absl::CancelledError("client went away");
  }, Soon());
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kCancelled, HasSubstr("went away")));
  EXPECT_EQ(decode_->active_sessions(), 0);
  EXPECT_EQ(service_->inflight(), 0);
}

TEST_F(PrefillServiceTest, DrainingRefusesNewRequests) {
  service_->StopAdmitting();
  EXPECT_THAT(Generate(Params("Once", 8)).stats, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("draining")));
}

TEST_F(PrefillServiceTest, AutoPicksByLinkAndQualityFloor) {
  with_policy_ = true;
  Start();
  control::GenerateParams p = Params("Once upon a time", 4, "auto");
  p.quality_floor = 3;
  Run r = Generate(p);
  KVS_ASSERT_OK(r.stats.status());
  EXPECT_EQ(r.stats->codec, "identity");
  EXPECT_THAT(r.stats->codec_reason, HasSubstr("auto: identity"));
  p.quality_floor = 0;
  // A slow link favours the smallest payload (the EWMA forgets the first request's loopback rate).
  for (int i = 0; i < 30; ++i) policy_->ObserveLink("local-decode", 0.001);
  r = Generate(p);
  KVS_ASSERT_OK(r.stats.status());
  EXPECT_EQ(r.stats->codec, "kivi_2bit");
  p.quality_floor = 4;
  EXPECT_THAT(Generate(p).stats, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("quality_floor")));
}

TEST_F(PrefillServiceTest, InfoListsPeersAndLimits) {
  KVS_ASSERT_OK_AND_ASSIGN(control::ServerInfo i, service_->Info(Soon()));
  EXPECT_EQ(i.role, "prefill");
  EXPECT_THAT(i.decode_peers, ::testing::ElementsAre("local-decode"));
  EXPECT_EQ(i.max_new_tokens_limit, 64);
  EXPECT_EQ(i.default_codec, "identity");
  KVS_EXPECT_OK(service_->CheckPeers(Soon()));
}

TEST(CodecPolicy, ChoosesTheFastestPredictedHandoffAboveTheFloor) {
  CodecPolicy policy({{"identity", 3, 1.0, 100, 100}, {"uniform_int8", 2, 2.0, 50, 50}, {"kivi_2bit", 0, 7.0, 4, 4}},
                     /*initial_gbps=*/100);
  // Fast link: compression does not pay.
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy.Choose("p", 1 << 20, 10, 0));
  EXPECT_EQ(c.codec, "identity");
  // Slow link: the smallest payload wins, unless the floor forbids it.
  for (int i = 0; i < 20; ++i) policy.ObserveLink("p", 0.1);
  EXPECT_NEAR(policy.LinkGbps("p"), 0.1, 0.01);
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("p", 1 << 20, 10, 0));
  EXPECT_EQ(c.codec, "kivi_2bit");
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("p", 1 << 20, 10, 2));
  EXPECT_EQ(c.codec, "uniform_int8");
  EXPECT_THAT(c.reason, HasSubstr("floor 2"));
  // Another peer still has the initial rate.
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("q", 1 << 20, 10, 0));
  EXPECT_EQ(c.codec, "identity");
}

TEST(CodecPolicy, CalibrationMeasuresWorkingCodecs) {
  CodecRegistry registry = CodecRegistry::Builtin();
  KVS_ASSERT_OK_AND_ASSIGN(auto policy, CodecPolicy::Calibrate(registry, {"identity", "uniform_int8", "nope"},
                                                               KvGeometry{1, 4, 64, 8}, nullptr, 10));
  ASSERT_EQ(policy->profiles().size(), 2u);
  EXPECT_NEAR(policy->profiles()[1].ratio, 2.0, 0.1);
  EXPECT_GT(policy->profiles()[1].encode_gbps, 0);
  EXPECT_THAT(CodecPolicy::Calibrate(registry, {"nope"}, KvGeometry{1, 4, 64, 8}, nullptr, 10),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no candidate")));
}

}  // namespace
}  // namespace kvs::prefill
