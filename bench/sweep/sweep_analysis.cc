#include "bench/sweep/sweep_analysis.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvs::bench {
namespace {

double Quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t i = static_cast<size_t>(std::floor(pos));
  const size_t j = std::min(i + 1, sorted.size() - 1);
  const double f = pos - static_cast<double>(i);
  return sorted[i] + f * (sorted[j] - sorted[i]);
}

}  // namespace

Spread Summarize(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = static_cast<int>(v.size());
  s.median = v[v.size() / 2];
  s.min = v.front();
  s.max = v.back();
  s.q1 = Quantile(v, 0.25);
  s.q3 = Quantile(v, 0.75);
  return s;
}

double RelativeDeviation(double measured, double analytic) {
  if (!(analytic > 0)) return std::numeric_limits<double>::quiet_NaN();
  return (measured - analytic) / analytic;
}

BreakEven FindBreakEven(std::vector<RatePoint> pts) {
  BreakEven b;
  pts.erase(std::remove_if(pts.begin(), pts.end(),
                           [](const RatePoint& p) { return !(p.link_gbps > 0 && p.raw_ms > 0 && p.codec_ms > 0); }),
            pts.end());
  if (pts.empty()) return b;
  auto pos = [](const RatePoint& p) { return p.order > 0 ? p.order : p.link_gbps; };
  std::stable_sort(pts.begin(), pts.end(), [&](const RatePoint& a, const RatePoint& c) { return pos(a) < pos(c); });
  auto speedup = [](const RatePoint& p) { return p.raw_ms / p.codec_ms; };
  int last_faster = -1;
  for (int i = 0; i < static_cast<int>(pts.size()); ++i) {
    if (speedup(pts[i]) > 1) last_faster = i;
  }
  if (last_faster < 0) {
    b.kind = BreakEven::Kind::kBelowAll;
    b.hi_gbps = pts.front().link_gbps;
    b.hi_label = pts.front().label;
    b.estimate_gbps = b.hi_gbps;
    return b;
  }
  for (int i = 0; i < last_faster; ++i) {
    if (speedup(pts[i]) <= 1) b.monotone = false;
  }
  const RatePoint& lo = pts[last_faster];
  b.lo_gbps = lo.link_gbps;
  b.lo_label = lo.label;
  if (last_faster == static_cast<int>(pts.size()) - 1) {
    b.kind = BreakEven::Kind::kAboveAll;
    b.estimate_gbps = b.lo_gbps;
    return b;
  }
  const RatePoint& hi = pts[last_faster + 1];
  b.kind = BreakEven::Kind::kBracketed;
  b.hi_gbps = hi.link_gbps;
  b.hi_label = hi.label;
  const double s0 = speedup(lo), s1 = speedup(hi);
  const double f = (s0 - 1) / (s0 - s1);  // s0 > 1 >= s1, so f in (0, 1]
  if (!(hi.link_gbps > lo.link_gbps)) {
    b.estimate_gbps = lo.link_gbps;
    return b;
  }
  b.estimate_gbps = std::exp(std::log(lo.link_gbps) + f * (std::log(hi.link_gbps) - std::log(lo.link_gbps)));
  return b;
}

const char* BreakEvenKindName(BreakEven::Kind kind) {
  switch (kind) {
    case BreakEven::Kind::kBracketed:
      return "bracketed";
    case BreakEven::Kind::kAboveAll:
      return "above_all";
    case BreakEven::Kind::kBelowAll:
      return "below_all";
    case BreakEven::Kind::kEmpty:
      break;
  }
  return "empty";
}

double AnalyticBreakEvenSequentialGbps(double ratio, double enc, double dec) {
  if (!(ratio > 1 && enc > 0 && dec > 0)) return 0;
  return 8.0 * (1.0 - 1.0 / ratio) / (1.0 / enc + 1.0 / dec);
}

double AnalyticBreakEvenPipelinedGbps(double ratio, double enc, double dec) {
  if (!(ratio > 1 && enc > 0 && dec > 0)) return 0;
  return 8.0 * std::min(enc, dec);
}

}  // namespace kvs::bench
