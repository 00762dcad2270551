// The auto codec policy with fixed profiles (link EWMA, quality floors, the pipelined prediction,
// the reason) and its quality file (the kvs-bench quality --json schema): no model, no daemons.
#include "services/prefill/codec_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>

#include "absl/strings/str_format.h"
#include "common/thread_pool/thread_pool.h"
#include "tests/testing/status_matchers.h"

namespace kvs::prefill {
namespace {

using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kChunkBytes = 1 << 20;
constexpr int64_t kChunks = 30;

// Speeds of the order kvs-prefill measures on one CPU core (Gbit/s); TA as in
// deploy/quality/SmolLM2-135M-Instruct.Q4_1.json (lower 95 % bounds).
std::vector<CodecProfile> Profiles() {
  return {{"identity", 3, 1.0, 80, 80, 1.0},        {"uniform_int8", 2, 2.0, 20, 30, 0.963},
          {"fp8_e4m3", 2, 2.0, 15, 20, 0.960},      {"mixed_k8v4", 2, 2.56, 15, 15, 0.840},
          {"kivi_2bit", 0, 6.0, 5, 5, 0.565}};
}

double RatioOf(const CodecPolicy& p, const std::string& codec) {
  for (const CodecProfile& c : p.profiles()) {
    if (c.name == codec) return c.ratio;
  }
  return 0;
}

double TaOf(const CodecPolicy& p, const std::string& codec) {
  for (const CodecProfile& c : p.profiles()) {
    if (c.name == codec) return c.token_agreement;
  }
  return -1;
}

TEST(CodecPolicy, OneGbitLinkPicksACompressingCodecThatMeetsTheTaFloor) {
  CodecPolicy policy(Profiles(), /*initial_gbps=*/10);
  policy.ObserveLink("b", 1.0);
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.95}));
  EXPECT_GT(RatioOf(policy, c.codec), 1.5) << c.reason;
  EXPECT_GE(TaOf(policy, c.codec), 0.95) << c.reason;
  EXPECT_EQ(c.codec, "uniform_int8");  // the faster of the two 8-bit codecs at the same ratio
  // Without the floor the smallest payload wins on this link.
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{}));
  EXPECT_EQ(c.codec, "kivi_2bit");
}

TEST(CodecPolicy, FastLinkPicksIdentityWhenItIsFastest) {
  CodecPolicy policy(Profiles(), /*initial_gbps=*/10);
  policy.ObserveLink("b", 100);
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.95}));
  EXPECT_EQ(c.codec, "identity") << c.reason;
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{}));
  EXPECT_EQ(c.codec, "identity") << c.reason;
}

TEST(CodecPolicy, TaFloorExcludesCodecsBelowIt) {
  CodecPolicy policy(Profiles(), /*initial_gbps=*/0.1);
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.85}));
  EXPECT_EQ(c.codec, "uniform_int8");
  for (const CodecPolicy::Candidate& k : c.ranked) {
    EXPECT_GE(TaOf(policy, k.codec), 0.85) << k.codec;
  }
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.80}));
  EXPECT_EQ(c.codec, "mixed_k8v4");
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.99}));
  EXPECT_EQ(c.codec, "identity");
  ASSERT_EQ(c.ranked.size(), 1u);
  EXPECT_THAT(c.reason, HasSubstr("excluded: uniform_int8 TA 0.963"));
  // Both floors apply: class 3 and TA 0.5 leave only the lossless codec.
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{3, 0.5}));
  EXPECT_EQ(c.codec, "identity");
}

TEST(CodecPolicy, NoCodecMeetingTheFloorAndBadFloorsAreErrors) {
  CodecPolicy lossy({{"uniform_int8", 2, 2.0, 20, 30, 0.963}, {"kivi_2bit", 0, 6.0, 5, 5, 0.565}}, 1);
  EXPECT_THAT(lossy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.99}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("uniform_int8 TA 0.963")));
  EXPECT_THAT(lossy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 1.5}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("min_token_agreement")));
  EXPECT_THAT(lossy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, std::nan("")}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("min_token_agreement")));
  EXPECT_THAT(lossy.Choose("b", kChunkBytes, kChunks, QualityFloor{4, 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("quality_floor")));
}

TEST(CodecPolicy, WithoutMeasuredQualityOnlyLosslessCodecsMeetATaFloor) {
  // Fixed classes (no quality file): token_agreement < 0.
  CodecPolicy policy({{"identity", 3, 1.0, 80, 80}, {"lossless_lz4", 3, 1.1, 10, 20}, {"uniform_int8", 2, 2.0, 20, 30}},
                     /*initial_gbps=*/0.5);
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.9}));
  EXPECT_THAT(c.codec, Not("uniform_int8"));
  EXPECT_THAT(c.reason, HasSubstr("uniform_int8 TA not measured"));
  EXPECT_THAT(c.reason, HasSubstr("fixed classes"));
  // The class floor alone still admits it.
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{2, 0}));
  EXPECT_EQ(c.codec, "uniform_int8");
}

TEST(CodecPolicy, PredictionIsThePipelinedModelAndTheReasonListsTheTopCandidates) {
  CodecPolicy policy({{"identity", 3, 1.0, 80, 40, 1.0}, {"uniform_int8", 2, 2.0, 20, 30, 0.963}}, 1);
  policy.ObserveLink("b", 4.0);
  const double bits = 8.0 * kChunkBytes;
  auto ms = [&](double gbps) { return bits / (gbps * 1e9) * 1e3; };
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.95}));
  ASSERT_EQ(c.ranked.size(), 2u);
  EXPECT_LE(c.ranked[0].predicted_ms, c.ranked[1].predicted_ms);
  EXPECT_EQ(c.codec, c.ranked[0].codec);
  // identity: c = bits/80G, x = bits/4G, d = bits/40G; int8: c = bits/20G, x = bits/8G, d = bits/30G.
  const double identity = (ms(80) + ms(4) + ms(40)) + (kChunks - 1) * ms(4);
  const double int8 = (ms(20) + ms(8) + ms(30)) + (kChunks - 1) * ms(8);
  EXPECT_EQ(c.codec, "uniform_int8");
  EXPECT_NEAR(c.ranked[0].predicted_ms, int8, 1e-9);
  EXPECT_NEAR(c.ranked[1].predicted_ms, identity, 1e-9);
  EXPECT_THAT(c.reason, HasSubstr(absl::StrFormat("uniform_int8 %.3f < identity %.3f", int8, identity)));
  EXPECT_THAT(c.reason, HasSubstr("link 4.000 Gbit/s to b (EWMA of 1 transfers)"));
  // Sequential: every stage of every chunk in turn.
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.95}, /*pipelined=*/false));
  EXPECT_NEAR(c.ranked[0].predicted_ms, kChunks * (ms(20) + ms(8) + ms(30)), 1e-9);
  EXPECT_THAT(c.reason, HasSubstr("sequential"));
}

TEST(CodecPolicy, LinkEwmaStartsAtThePriorAndFollowsEveryObservation) {
  CodecPolicy policy(Profiles(), /*initial_gbps=*/10);
  EXPECT_EQ(policy.LinkGbps("b"), 10);
  EXPECT_EQ(policy.LinkObservations("b"), 0);
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{}));
  EXPECT_THAT(c.reason, HasSubstr("prior, none measured"));
  policy.ObserveLink("b", 2.0);  // the first measurement replaces the prior
  EXPECT_DOUBLE_EQ(policy.LinkGbps("b"), 2.0);
  policy.ObserveLink("b", 1.0);
  EXPECT_DOUBLE_EQ(policy.LinkGbps("b"), 0.7 * 2.0 + 0.3 * 1.0);
  policy.ObserveLink("b", 0);  // not a measurement
  policy.ObserveLink("b", std::numeric_limits<double>::infinity());
  EXPECT_EQ(policy.LinkObservations("b"), 2);
  EXPECT_EQ(policy.LinkGbps("other"), 10);  // per peer
}

TEST(CodecPolicy, MeasuredTransfersReplaceTheCalibratedCodecSpeeds) {
  CodecPolicy policy({{"identity", 3, 1.0, 80, 40, 1.0}, {"uniform_int8", 2, 2.0, 20, 30, 0.963}}, 1);
  policy.ObserveLink("b", 4.0);
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.95}));
  EXPECT_EQ(c.codec, "uniform_int8");
  EXPECT_THAT(c.reason, HasSubstr("calibrated"));
  EXPECT_EQ(policy.CodecSpeeds("uniform_int8").encode_gbps, 20);
  // A transfer measured uniform_int8 encoding 1 MB in 8 ms (1 Gbit/s) and the peer decoding it in
  // 2 ms (4 Gbit/s): slower than its link time saving, so identity now predicts faster.
  policy.ObserveCodec("uniform_int8", 1e6, 8, 2);
  CodecPolicy::Speeds sp = policy.CodecSpeeds("uniform_int8");
  EXPECT_DOUBLE_EQ(sp.encode_gbps, 1.0);
  EXPECT_DOUBLE_EQ(sp.decode_gbps, 4.0);
  EXPECT_EQ(sp.encode_observations, 1);
  KVS_ASSERT_OK_AND_ASSIGN(c, policy.Choose("b", kChunkBytes, kChunks, QualityFloor{0, 0.95}));
  EXPECT_EQ(c.codec, "identity") << c.reason;
  // An unreported decode time keeps that side's previous value; speeds are per codec.
  policy.ObserveCodec("uniform_int8", 1e6, 4, 0);
  sp = policy.CodecSpeeds("uniform_int8");
  EXPECT_DOUBLE_EQ(sp.encode_gbps, 0.7 * 1.0 + 0.3 * 2.0);
  EXPECT_DOUBLE_EQ(sp.decode_gbps, 4.0);
  EXPECT_EQ(sp.decode_observations, 1);
  EXPECT_EQ(policy.CodecSpeeds("identity").encode_gbps, 80);
  EXPECT_EQ(policy.CodecSpeeds("identity").encode_observations, 0);
}

// ---- the quality file ----------------------------------------------------------------------------

TEST(QualityTable, TheShippedSmolLm2FileParses) {
  KVS_ASSERT_OK_AND_ASSIGN(QualityTable t,
                           QualityTable::Load(std::string(KVS_DEPLOY_QUALITY_DIR) + "/SmolLM2-135M-Instruct.Q4_1.json"));
  EXPECT_EQ(t.model(), "models/SmolLM2-135M-Instruct.Q4_1.gguf");
  EXPECT_EQ(t.size(), 14u);
  ASSERT_TRUE(t.Find("uniform_int8").has_value());
  EXPECT_DOUBLE_EQ(t.Find("uniform_int8")->ta_mean, 0.976);
  EXPECT_DOUBLE_EQ(t.Find("uniform_int8")->ta(), 0.963);  // the lower 95 % bound
  EXPECT_DOUBLE_EQ(t.Find("identity")->ta(), 1.0);
  EXPECT_LT(t.Find("mixed_k8v4")->ta(), 0.95);
  EXPECT_FALSE(t.Find("nope").has_value());
}

TEST(QualityTable, MeanWithoutAnIntervalAndUnavailableCodecs) {
  KVS_ASSERT_OK_AND_ASSIGN(QualityTable t, QualityTable::Parse(R"({"codecs": [
      {"codec": "uniform_int8", "token_agreement": {"mean": 0.97}},
      {"codec": "cachegen", "error": "not built"}]})", "q.json"));
  EXPECT_EQ(t.size(), 1u);
  EXPECT_DOUBLE_EQ(t.Find("uniform_int8")->ta(), 0.97);
  EXPECT_EQ(t.model(), "");
}

TEST(QualityTable, MalformedFilesAreClearErrors) {
  struct Case {
    const char* json;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {"{", "not valid JSON"},
           {"[]", "not a JSON object"},
           {R"({"model": "x", "codecs": []})", "\"model\""},
           {R"({"codecs": {}})", "no \"codecs\" array"},
           {R"({"codecs": []})", "no codec with a token_agreement"},
           {R"({"codecs": [{"token_agreement": {"mean": 1}}]})", "codecs[0]: needs a non-empty string"},
           {R"({"codecs": [{"codec": "a"}]})", "codecs[0] (a): no \"token_agreement\""},
           {R"({"codecs": [{"codec": "a", "token_agreement": {"mean": 1.5}}]})", "mean must be a number in [0, 1]"},
           {R"({"codecs": [{"codec": "a", "token_agreement": {"mean": "high"}}]})", "mean must be"},
           {R"({"codecs": [{"codec": "a", "token_agreement": {"mean": 0.9, "ci95": [0.95, 0.9]}}]})", "ci95"},
           {R"({"codecs": [{"codec": "a", "token_agreement": {"mean": 0.9, "ci95": [0.8]}}]})", "ci95"},
           {R"({"codecs": [{"codec": "a", "token_agreement": {"mean": 0.9}},
                           {"codec": "a", "token_agreement": {"mean": 0.8}}]})", "codecs[1] (a): listed twice"},
       }) {
    EXPECT_THAT(QualityTable::Parse(c.json, "bad.json"),
                StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("quality file bad.json"), HasSubstr(c.says))))
        << c.json;
  }
  EXPECT_THAT(QualityTable::Load("/nonexistent/q.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/q.json")));
}

TEST(CodecPolicy, CalibrationMeasuresWithThePoolAndTakesTaFromTheQualityFile) {
  KVS_ASSERT_OK_AND_ASSIGN(QualityTable q, QualityTable::Parse(R"({"codecs": [
      {"codec": "uniform_int8", "token_agreement": {"mean": 0.97, "ci95": [0.96, 0.98]}}]})", "q.json"));
  CodecRegistry registry = CodecRegistry::Builtin();
  ThreadPool pool(2);
  KVS_ASSERT_OK_AND_ASSIGN(auto policy, CodecPolicy::Calibrate(registry, {"identity", "uniform_int8", "kivi_2bit"},
                                                               KvGeometry{1, 4, 64, 16}, &pool, 10, &q));
  ASSERT_EQ(policy->profiles().size(), 3u);
  EXPECT_DOUBLE_EQ(policy->profiles()[1].token_agreement, 0.96);
  EXPECT_LT(policy->profiles()[2].token_agreement, 0);  // not in the file
  EXPECT_LT(policy->profiles()[0].token_agreement, 0);
  for (const CodecProfile& p : policy->profiles()) {
    EXPECT_GT(p.encode_gbps, 0) << p.name;
    EXPECT_GT(p.decode_gbps, 0) << p.name;
  }
  EXPECT_THAT(policy->quality_source(), HasSubstr("q.json"));
  // Identity (TA 1 by construction) and uniform_int8 (0.96) meet 0.95; kivi_2bit is unmeasured.
  KVS_ASSERT_OK_AND_ASSIGN(CodecPolicy::Choice c, policy->Choose("b", 1 << 20, 8, QualityFloor{0, 0.95}));
  EXPECT_EQ(c.ranked.size(), 2u);
  EXPECT_THAT(c.reason, HasSubstr("kivi_2bit TA not measured"));
}

}  // namespace
}  // namespace kvs::prefill
