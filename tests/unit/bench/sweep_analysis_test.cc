#include "bench/sweep/sweep_analysis.h"

#include <cmath>

#include <gtest/gtest.h>

namespace kvs::bench {
namespace {

TEST(Summarize, MedianIsTheTransferBenchsAndQuartilesInterpolate) {
  const Spread s = Summarize({40, 10, 30, 20});
  EXPECT_EQ(s.n, 4);
  EXPECT_DOUBLE_EQ(s.median, 30);  // sorted[size / 2]
  EXPECT_DOUBLE_EQ(s.min, 10);
  EXPECT_DOUBLE_EQ(s.max, 40);
  EXPECT_DOUBLE_EQ(s.q1, 17.5);  // numpy.percentile(.., 25)
  EXPECT_DOUBLE_EQ(s.q3, 32.5);
  const Spread one = Summarize({7});
  EXPECT_DOUBLE_EQ(one.median, 7);
  EXPECT_DOUBLE_EQ(one.q1, 7);
  EXPECT_EQ(Summarize({}).n, 0);
}

TEST(RelativeDeviation, SignedFractionOfTheModelAndNanWithoutOne) {
  EXPECT_DOUBLE_EQ(RelativeDeviation(110, 100), 0.10);
  EXPECT_DOUBLE_EQ(RelativeDeviation(90, 100), -0.10);
  EXPECT_TRUE(std::isnan(RelativeDeviation(90, 0)));
}

TEST(FindBreakEven, BracketsTheCrossingAndInterpolatesInLogRate) {
  // Speed-ups 2.0 at 1, 1.5 at 4, 0.5 at 16 Gbit/s, given out of order.
  const BreakEven b = FindBreakEven({{"16gbit", 16, 50, 100}, {"1gbit", 1, 200, 100}, {"4gbit", 4, 150, 100}});
  EXPECT_EQ(b.kind, BreakEven::Kind::kBracketed);
  EXPECT_EQ(b.lo_label, "4gbit");
  EXPECT_EQ(b.hi_label, "16gbit");
  EXPECT_DOUBLE_EQ(b.lo_gbps, 4);
  EXPECT_DOUBLE_EQ(b.hi_gbps, 16);
  // Speed-up falls 1.5 -> 0.5 over log(4)..log(16); 1.0 is half way: sqrt(4 * 16) = 8.
  EXPECT_NEAR(b.estimate_gbps, 8.0, 1e-9);
  EXPECT_TRUE(b.monotone);
}

TEST(FindBreakEven, FasterEverywhereIsALowerBoundAtTheTopRate) {
  const BreakEven b = FindBreakEven({{"1gbit", 0.96, 200, 100}, {"veth", 14.2, 120, 100}});
  EXPECT_EQ(b.kind, BreakEven::Kind::kAboveAll);
  EXPECT_DOUBLE_EQ(b.lo_gbps, 14.2);
  EXPECT_EQ(b.lo_label, "veth");
  EXPECT_STREQ(BreakEvenKindName(b.kind), "above_all");
}

TEST(FindBreakEven, NeverFasterIsAnUpperBoundAtTheLowestRate) {
  const BreakEven b = FindBreakEven({{"5gbit", 5, 90, 100}, {"1gbit", 1, 100, 100}});
  EXPECT_EQ(b.kind, BreakEven::Kind::kBelowAll);  // equal time is not faster
  EXPECT_DOUBLE_EQ(b.hi_gbps, 1);
}

TEST(FindBreakEven, NonMonotoneSeriesUseTheHighestFasterRateAndSaySo) {
  const BreakEven b =
      FindBreakEven({{"1gbit", 1, 200, 100}, {"5gbit", 5, 95, 100}, {"10gbit", 10, 120, 100}, {"25gbit", 25, 80, 100}});
  EXPECT_EQ(b.kind, BreakEven::Kind::kBracketed);
  EXPECT_EQ(b.lo_label, "10gbit");
  EXPECT_EQ(b.hi_label, "25gbit");
  EXPECT_FALSE(b.monotone);
}

TEST(FindBreakEven, OrdersByTheShapingWhenGivenAndDoesNotExtrapolateDownwards) {
  // A CPU-bound machine: the 10gbit link measured 3.1, the unshaped one 3.0 Gbit/s.
  RatePoint five{"5gbit", 3.06, 200, 100, 5}, ten{"10gbit", 3.14, 150, 100, 10},
      veth{"veth", 3.0, 90, 100, 1e9};
  const BreakEven b = FindBreakEven({veth, ten, five});
  EXPECT_EQ(b.kind, BreakEven::Kind::kBracketed);
  EXPECT_EQ(b.lo_label, "10gbit");
  EXPECT_EQ(b.hi_label, "veth");
  EXPECT_DOUBLE_EQ(b.estimate_gbps, 3.14);  // the upper point is no faster a link: no interpolation
  EXPECT_TRUE(b.monotone);
}

TEST(FindBreakEven, IgnoresPointsWithoutMeasurements) {
  EXPECT_EQ(FindBreakEven({}).kind, BreakEven::Kind::kEmpty);
  EXPECT_EQ(FindBreakEven({{"x", 0, 100, 50}, {"y", 1, 0, 50}}).kind, BreakEven::Kind::kEmpty);
}

TEST(AnalyticBreakEven, PaperEquationAndPipelinedBound) {
  // r = 2, encode 4 GB/s, decode 4 GB/s: B* = 8 * 0.5 / (0.25 + 0.25) = 8 Gbit/s sequential;
  // pipelined the slower stage sets it: 8 * 4 = 32 Gbit/s.
  EXPECT_DOUBLE_EQ(AnalyticBreakEvenSequentialGbps(2, 4, 4), 8);
  EXPECT_DOUBLE_EQ(AnalyticBreakEvenPipelinedGbps(2, 4, 6), 32);
  EXPECT_DOUBLE_EQ(AnalyticBreakEvenSequentialGbps(1, 4, 4), 0);
  EXPECT_DOUBLE_EQ(AnalyticBreakEvenPipelinedGbps(3, 0, 4), 0);
}

}  // namespace
}  // namespace kvs::bench
