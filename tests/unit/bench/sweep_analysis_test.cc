#include "bench/sweep/sweep_analysis.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

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

// A kvs-bench transfer run record with only what the sweep reads.
nlohmann::json TransferRun(const std::string& codec, bool pipelined, std::vector<double> repeats, double analytic_mode,
                   double wire_ms, double analytic_transfer_ms, double link_gbps) {
  std::vector<double> sorted = repeats;
  std::sort(sorted.begin(), sorted.end());
  return {{"codec", codec},
          {"pipelined", pipelined},
          {"handoff_ms", sorted[sorted.size() / 2]},
          {"handoff_repeats_ms", sorted},
          {"baseline_gbps", link_gbps},
          {"analytic_ms", analytic_mode},
          {"analytic_transfer_ms", analytic_transfer_ms},
          {"analytic_sequential_ms", analytic_mode},
          {"analytic_pipelined_ms", analytic_mode},
          {"analytic_raw_ms", 2 * analytic_transfer_ms},
          {"wire_ms", wire_ms},
          {"ratio", codec == "identity" ? 1.0 : 2.0},
          {"chunk_timings", nlohmann::json::array({1, 2, 3})}};
}

const nlohmann::json kGeom = {{"layers", 32}, {"heads", 8}, {"tokens", 1024}, {"head_dim", 128}};

TEST(PointRecord, MedianSpreadAnalyticAndDeviation) {
  const nlohmann::json p =
      PointRecord(TransferRun("uniform_int8", true, {130, 100, 110}, 100, 90, 80, 9.5), {"10gbit", 10, 10}, "llama-3.1-8b",
                  "synthetic", kGeom, /*keep_chunks=*/false);
  EXPECT_EQ(p["rate"], "10gbit");
  EXPECT_DOUBLE_EQ(p["link_gbps"].get<double>(), 9.5);
  EXPECT_EQ(p["tokens"], 1024);
  EXPECT_EQ(p["mode"], "pipelined");
  EXPECT_DOUBLE_EQ(p["handoff_ms"]["median"].get<double>(), 110);
  EXPECT_DOUBLE_EQ(p["handoff_ms"]["min"].get<double>(), 100);
  EXPECT_DOUBLE_EQ(p["handoff_ms"]["max"].get<double>(), 130);
  EXPECT_DOUBLE_EQ(p["deviation"]["handoff_vs_mode"].get<double>(), 0.10);    // 110 vs 100
  EXPECT_DOUBLE_EQ(p["deviation"]["wire_vs_transfer"].get<double>(), 0.125);  // 90 vs 80
  EXPECT_DOUBLE_EQ(p["analytic"]["transfer_ms"].get<double>(), 80);
  EXPECT_FALSE(p["run"].contains("chunk_timings"));
}

TEST(PointRecord, NoLinkMeasurementMeansNullDeviation) {
  const nlohmann::json p = PointRecord(TransferRun("identity", false, {50}, 0, 40, 0, 0), {"veth", 0, 1e6}, "m", "real",
                                       kGeom, /*keep_chunks=*/true);
  EXPECT_TRUE(p["deviation"]["handoff_vs_mode"].is_null());
  EXPECT_TRUE(p["run"].contains("chunk_timings"));
}

TEST(AnalysePoints, SpeedUpOverIdentityOnTheSameLinkAndBreakEvenAcrossRates) {
  nlohmann::json points = nlohmann::json::array();
  // 1gbit: identity 200, int8 100 (2x); veth: identity 50, int8 60 (0.83x).
  points.push_back(PointRecord(TransferRun("identity", true, {200}, 0, 0, 0, 0.95), {"1gbit", 1, 1}, "m", "synthetic", kGeom,
                               false));
  points.push_back(PointRecord(TransferRun("uniform_int8", true, {100}, 0, 0, 0, 0.95), {"1gbit", 1, 1}, "m", "synthetic",
                               kGeom, false));
  points.push_back(PointRecord(TransferRun("identity", true, {50}, 0, 0, 0, 9.0), {"veth", 0, 1e6}, "m", "synthetic", kGeom,
                               false));
  points.push_back(PointRecord(TransferRun("uniform_int8", true, {60}, 0, 0, 0, 9.0), {"veth", 0, 1e6}, "m", "synthetic",
                               kGeom, false));
  // A sequential int8 point without a sequential identity: no speed-up, no break-even entry.
  points.push_back(PointRecord(TransferRun("uniform_int8", false, {70}, 0, 0, 0, 9.0), {"veth", 0, 1e6}, "m", "synthetic",
                               kGeom, false));
  const nlohmann::json be = AnalysePoints(&points);
  EXPECT_DOUBLE_EQ(points[1]["speedup_vs_identity"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(points[3]["speedup_vs_identity"].get<double>(), 50.0 / 60.0);
  EXPECT_DOUBLE_EQ(points[0]["speedup_vs_identity"].get<double>(), 1.0);
  EXPECT_FALSE(points[4].contains("speedup_vs_identity"));
  ASSERT_EQ(be.size(), 1u);
  EXPECT_EQ(be[0]["codec"], "uniform_int8");
  EXPECT_EQ(be[0]["kind"], "bracketed");
  EXPECT_EQ(be[0]["lo_rate"], "1gbit");
  EXPECT_EQ(be[0]["hi_rate"], "veth");
  EXPECT_EQ(DescribeBreakEven(be[0]).find("between 1gbit = 0.95 and veth = 9.00") != std::string::npos, true)
      << DescribeBreakEven(be[0]);
}

}  // namespace
}  // namespace kvs::bench
