// kvs-loadgen's engine against a scripted in-process PrefillApi.
#include "services/loadgen/loadgen.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace kvs::loadgen {
namespace {

using ::testing::HasSubstr;

// Generates tokens derived from the prompt; "lossy" flips the last token; "broken" fails.
class FakePrefill final : public control::PrefillApi {
 public:
  std::string target() const override { return "fake:1"; }
  absl::StatusOr<control::RequestStats> Generate(const control::GenerateParams& p, const control::TokenSink& sink,
                                                 absl::Time) override {
    const int now = ++inflight;
    int seen = max_inflight.load();
    while (now > seen && !max_inflight.compare_exchange_weak(seen, now)) {
    }
    struct Done {
      std::atomic<int>* n;
      ~Done() { --*n; }
    } done{&inflight};
    if (p.codec == "broken") return absl::UnavailableError("decode peer lost");
    std::vector<int32_t> toks;
    for (int i = 0; i < p.max_new_tokens; ++i) toks.push_back(static_cast<int32_t>(p.prompt.size() + i));
    if (p.codec == "lossy") toks.back() += 1;
    for (int i = 0; i < static_cast<int>(toks.size()); ++i) {
      KVS_RETURN_IF_ERROR(sink(control::TokenPiece{toks[i], "x", i}));
    }
    control::RequestStats st;
    st.codec = p.codec;
    // "auto" resolves by the request's floors: a TA floor keeps 8-bit, none allows 2-bit.
    if (p.codec == "auto") st.codec = p.min_token_agreement >= 0.95 ? "uniform_int8" : "kivi_2bit";
    if (p.codec == "auto" && p.quality_floor == 3) st.codec = "identity";
    st.ttft_ms = 1 + static_cast<double>(p.prompt.size() % 3);
    st.handoff_ms = 0.5;
    st.tpot_ms = 2;
    st.generated_tokens = p.max_new_tokens;
    st.raw_bytes = 4000;
    st.wire_bytes = p.codec == "identity" ? 4100 : 1100;
    st.transport = "tcp";
    return st;
  }
  absl::StatusOr<control::ServerInfo> Info(absl::Time) override { return control::ServerInfo{}; }

  std::atomic<int> inflight{0};
  std::atomic<int> max_inflight{0};
};

LoadgenOptions Options() {
  LoadgenOptions o;
  o.prompt_text = "hello";
  o.requests = 20;
  o.concurrency = 3;
  o.max_new_tokens = 4;
  o.progress = false;
  return o;
}

TEST(Loadgen, ClosedLoopRunsEveryRequestAtTheConcurrency) {
  FakePrefill fake;
  LoadgenOptions o = Options();
  o.codecs = {"identity", "lossy"};
  o.check_against = "identity";
  std::atomic<int> progress_calls{0};
  KVS_ASSERT_OK_AND_ASSIGN(LoadgenReport r, RunLoadgen(o, {Prompt{"aaaa", {}}, Prompt{"bbbbb", {}}}, fake,
                                                       [&](const std::string&, int64_t, int64_t total) {
                                                         EXPECT_EQ(total, 20);
                                                         ++progress_calls;
                                                       }));
  EXPECT_EQ(progress_calls, 40);
  EXPECT_LE(fake.max_inflight, 3);
  ASSERT_EQ(r.codecs.size(), 2u);
  const CodecSummary& id = r.codecs[0];
  const CodecSummary& lossy = r.codecs[1];
  EXPECT_EQ(id.codec, "identity");
  EXPECT_EQ(id.requests, 20);
  EXPECT_EQ(id.errors, 0);
  EXPECT_NEAR(id.ratio, 4000.0 / 4100.0, 1e-9);
  EXPECT_NEAR(lossy.ratio, 4000.0 / 1100.0, 1e-9);
  EXPECT_EQ(id.token_agreement, 1.0);
  EXPECT_NEAR(lossy.token_agreement, 0.75, 1e-9);  // the last of 4 tokens differs
  EXPECT_EQ(lossy.exact_match, 0.0);
  EXPECT_EQ(id.handoff_ms.p50, 0.5);
  EXPECT_EQ(id.transport, "tcp");
}

TEST(Loadgen, ErrorsAreCountedWithSamples) {
  FakePrefill fake;
  LoadgenOptions o = Options();
  o.codecs = {"broken"};
  KVS_ASSERT_OK_AND_ASSIGN(LoadgenReport r, RunLoadgen(o, {Prompt{"p", {}}}, fake, nullptr));
  ASSERT_EQ(r.codecs.size(), 1u);
  EXPECT_EQ(r.codecs[0].errors, 20);
  ASSERT_EQ(r.codecs[0].error_samples.size(), 1u);
  EXPECT_THAT(r.codecs[0].error_samples[0], HasSubstr("decode peer lost"));
  EXPECT_THAT(FormatTable(r), HasSubstr("broken error: UNAVAILABLE"));
}

TEST(Loadgen, OpenLoopIssuesTheRequestedCount) {
  FakePrefill fake;
  LoadgenOptions o = Options();
  o.rate = 2000;  // fast arrivals keep the test short
  o.requests = 30;
  KVS_ASSERT_OK_AND_ASSIGN(LoadgenReport r, RunLoadgen(o, {Prompt{"p", {}}}, fake, nullptr));
  EXPECT_EQ(r.codecs[0].requests, 30);
  EXPECT_THAT(r.mode, HasSubstr("open loop"));
  EXPECT_LE(fake.max_inflight, 3);
}

TEST(Loadgen, ReferenceOnlyForAgreementIsNotReported) {
  FakePrefill fake;
  LoadgenOptions o = Options();
  o.codecs = {"lossy"};
  o.check_against = "identity";
  KVS_ASSERT_OK_AND_ASSIGN(LoadgenReport r, RunLoadgen(o, {Prompt{"p", {}}}, fake, nullptr));
  ASSERT_EQ(r.codecs.size(), 1u);
  EXPECT_EQ(r.codecs[0].codec, "lossy");
  EXPECT_TRUE(r.codecs[0].has_agreement);
}

TEST(Loadgen, JsonHasTheDocumentedFields) {
  FakePrefill fake;
  LoadgenOptions o = Options();
  o.codecs = {"identity"};
  KVS_ASSERT_OK_AND_ASSIGN(LoadgenReport r, RunLoadgen(o, {Prompt{"p", {}}}, fake, nullptr));
  nlohmann::json j = nlohmann::json::parse(ToJson(r, /*with_outputs=*/true));
  const auto& c = j["codecs"][0];
  for (const char* k : {"codec", "requests", "errors", "ttft_ms_p50", "ttft_ms_p99", "handoff_ms_p50",
                        "handoff_ms_p99", "ratio", "token_agreement", "outputs"}) {
    EXPECT_TRUE(c.contains(k)) << k;
  }
  EXPECT_EQ(c["outputs"].size(), 20u);
  EXPECT_EQ(c["outputs"][0]["text"], "xxxx");
}

TEST(Loadgen, FixedLengthPromptsAreTokenIds) {
  LoadgenOptions o;
  o.prompt_tokens = 100;
  o.num_prompts = 2;
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<Prompt> prompts, LoadPrompts(o, /*vocab_size=*/512));
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0].ids.size(), 100u);
  EXPECT_NE(prompts[0].ids, prompts[1].ids);
  for (int32_t id : prompts[0].ids) {
    EXPECT_GE(id, 3);
    EXPECT_LT(id, 512);
  }
  EXPECT_THAT(LoadPrompts(o, 0), kvs::testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocabulary")));
}

TEST(Loadgen, AutoPassesTheFloorsAndTheSummaryCountsWhatItResolvedTo) {
  FakePrefill fake;
  LoadgenOptions o = Options();
  o.codecs = {"auto", "identity"};
  o.min_ta = 0.95;
  KVS_ASSERT_OK_AND_ASSIGN(LoadgenReport r, RunLoadgen(o, {Prompt{"p", {}}}, fake, nullptr));
  ASSERT_EQ(r.codecs.size(), 2u);
  EXPECT_EQ(r.codecs[0].resolved, (std::map<std::string, int64_t>{{"uniform_int8", 20}}));
  EXPECT_EQ(r.codecs[1].resolved, (std::map<std::string, int64_t>{{"identity", 20}}));
  const std::string table = FormatTable(r);
  EXPECT_THAT(table, HasSubstr("auto resolved to: uniform_int8 20"));
  EXPECT_THAT(table, ::testing::Not(HasSubstr("identity resolved to")));
  nlohmann::json j = nlohmann::json::parse(ToJson(r, false));
  EXPECT_EQ(j["codecs"][0]["resolved"]["uniform_int8"], 20);
  EXPECT_EQ(j["codecs"][0]["handoff_ms_mean"], 0.5);
  o.min_ta = 0;
  o.quality_floor = 3;
  o.codecs = {"auto"};
  KVS_ASSERT_OK_AND_ASSIGN(r, RunLoadgen(o, {Prompt{"p", {}}}, fake, nullptr));
  EXPECT_EQ(r.codecs[0].resolved, (std::map<std::string, int64_t>{{"identity", 20}}));
}

TEST(Loadgen, PercentilesAndAgreementHelpers) {
  Percentiles p = ComputePercentiles({5, 1, 4, 2, 3, 6, 7, 8, 9, 10});
  EXPECT_EQ(p.p50, 5);
  EXPECT_EQ(p.p90, 9);
  EXPECT_EQ(p.p99, 10);
  EXPECT_EQ(p.mean, 5.5);
  EXPECT_EQ(TokenAgreement({1, 2, 3, 4}, {1, 2, 9}), 0.5);
  EXPECT_EQ(TokenAgreement({}, {}), 1.0);
}

TEST(Loadgen, PromptsComeFromParagraphs) {
  LoadgenOptions o;
  o.prompts_file = std::string(KVS_TEST_DATA_DIR) + "/text/wikitext-2-raw-test-excerpt.txt";
  o.prompt_words = 5;
  o.num_prompts = 3;
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<Prompt> prompts, LoadPrompts(o));
  ASSERT_EQ(prompts.size(), 3u);
  EXPECT_EQ(prompts[0].text, "Robert Boulter is an English");
  o.prompts_file = "/nonexistent";
  EXPECT_THAT(LoadPrompts(o), kvs::testing::StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent")));
}

}  // namespace
}  // namespace kvs::loadgen
