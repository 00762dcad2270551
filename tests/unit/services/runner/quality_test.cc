#include "services/runner/quality.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/testing/status_matchers.h"

namespace kvs {
namespace {

using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

Logits Make(int64_t rows, int64_t vocab, float fill = 0.f) {
  Logits l;
  l.rows = rows;
  l.vocab = vocab;
  l.data.assign(static_cast<size_t>(rows * vocab), fill);
  return l;
}

TEST(PaperSplit, KeepsEightyPercentAndAtLeastTenContinuationTokens) {
  EXPECT_EQ(PaperSplit(220).prefix, 176);
  EXPECT_EQ(PaperSplit(220).continuation, 44);
  EXPECT_EQ(PaperSplit(50).prefix, 40);
  EXPECT_EQ(PaperSplit(12).prefix, 2);   // floor(9.6) = 9, capped at 12 - 10
  EXPECT_EQ(PaperSplit(12).continuation, 10);
  EXPECT_EQ(PaperSplit(5).prefix, 4);    // T <= 10: no cap
  EXPECT_EQ(PaperSplit(1).prefix, 1);
  EXPECT_EQ(PaperSplit(1).continuation, 0);
}

TEST(TokenAgreement, CountsMatchingArgmaxRows) {
  Logits a = Make(4, 5), b = Make(4, 5);
  for (int64_t i = 0; i < 4; ++i) a.data[i * 5 + i] = b.data[i * 5 + i] = 1.f;
  KVS_ASSERT_OK_AND_ASSIGN(double same, TokenAgreement(a, b));
  EXPECT_EQ(same, 1.0);
  b.data[2 * 5 + 4] = 9.f;
  KVS_ASSERT_OK_AND_ASSIGN(double three, TokenAgreement(a, b));
  EXPECT_EQ(three, 0.75);
  std::mt19937 rng(1);
  std::normal_distribution<float> n;
  Logits r1 = Make(50, 10), r2 = Make(50, 10);
  for (float& x : r1.data) x = n(rng);
  for (float& x : r2.data) x = n(rng);
  KVS_ASSERT_OK_AND_ASSIGN(double rnd, TokenAgreement(r1, r2));
  EXPECT_GE(rnd, 0.0);
  EXPECT_LE(rnd, 1.0);
  EXPECT_THAT(TokenAgreement(a, Make(3, 5)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vs")));
}

TEST(Perplexity, UniformLogitsGiveTheVocabularySize) {
  const std::vector<int32_t> targets = {3, 7, 1, 99, 0, 42};
  KVS_ASSERT_OK_AND_ASSIGN(double ppl, Perplexity(Make(6, 100), targets));
  EXPECT_NEAR(ppl, 100.0, 1e-9);
  Logits sure = Make(6, 100);
  for (size_t i = 0; i + 1 < targets.size(); ++i) sure.data[i * 100 + targets[i + 1]] = 100.f;
  KVS_ASSERT_OK_AND_ASSIGN(double low, Perplexity(sure, targets));
  EXPECT_LT(low, 1.1);
  EXPECT_THAT(Perplexity(Make(5, 100), targets), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 logit rows")));
  EXPECT_FALSE(Perplexity(Make(1, 100), std::vector<int32_t>{1}).ok());
  EXPECT_THAT(Perplexity(Make(2, 100), std::vector<int32_t>{1, 100}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
}

TEST(CompareSequences, ReportsFractionAndFirstDivergence) {
  const std::vector<int32_t> ref = {1, 2, 3, 4};
  SequenceAgreement same = CompareSequences(ref, ref);
  EXPECT_EQ(same.fraction, 1.0);
  EXPECT_EQ(same.first_divergence, 4);
  SequenceAgreement diff = CompareSequences(ref, std::vector<int32_t>{1, 9, 3});
  EXPECT_EQ(diff.fraction, 0.5);  // position 1 differs, position 3 is missing
  EXPECT_EQ(diff.first_divergence, 1);
}

TEST(BootstrapMean, IsSeededAndBracketsTheMean) {
  const std::vector<double> same(20, 0.7);
  BootstrapInterval c = BootstrapMean(same);
  EXPECT_DOUBLE_EQ(c.mean, 0.7);
  EXPECT_DOUBLE_EQ(c.lo, 0.7);
  EXPECT_DOUBLE_EQ(c.hi, 0.7);
  std::vector<double> v;
  for (int i = 0; i < 30; ++i) v.push_back(i % 3 == 0 ? 1.0 : 0.0);
  BootstrapInterval a = BootstrapMean(v), b = BootstrapMean(v);
  EXPECT_NEAR(a.mean, 1.0 / 3.0, 1e-12);
  EXPECT_LT(a.lo, a.mean);
  EXPECT_GT(a.hi, a.mean);
  EXPECT_GT(a.lo, 0.1);
  EXPECT_LT(a.hi, 0.6);
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
}

}  // namespace
}  // namespace kvs
