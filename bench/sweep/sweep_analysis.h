// bench/sweep/sweep_analysis.h — the arithmetic of `kvs-bench sweep`, apart from any measuring:
// repeat statistics, measured-vs-analytic deviation and the measured break-even bandwidth.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvs::bench {

// Order statistics of a point's timed repeats. The median is the transfer bench's: the element
// at size/2 of the sorted repeats (the upper median for an even count). Quartiles interpolate
// linearly between order statistics (numpy's default).
struct Spread {
  double median = 0, min = 0, max = 0, q1 = 0, q3 = 0;
  int n = 0;
};
Spread Summarize(std::vector<double> values);

// (measured − analytic) / analytic; NaN when analytic <= 0 (no model).
double RelativeDeviation(double measured, double analytic);

// One link rate of a (model, tokens, codec, mode) series: the measured handoff of raw identity and
// of the codec on the same link, in the same run.
struct RatePoint {
  std::string label;      // "1gbit", "veth", ...
  double link_gbps = 0;   // the link rate measured there (iperf3)
  double raw_ms = 0;      // identity's median handoff
  double codec_ms = 0;    // the codec's median handoff
  // Position on the rate axis; 0: link_gbps. The sweep orders by the shaping (tbf rate; unshaped
  // veth and loopback above every shaped rate), since a CPU-bound machine measures nearly the same
  // iperf3 rate on every link above what it can carry and that order would be noise.
  double order = 0;
};

// Break-even bandwidth B*: the link rate above which sending compressed is no longer faster than
// sending raw identity. Measured, B* is bracketed by the grid: `lo` is the highest measured rate at
// which the codec is faster (speed-up raw/codec > 1) and `hi` the next measured rate, where it is
// not. The estimate interpolates the speed-up linearly in log(rate) between the two.
//   kBracketed: lo < B* <= hi.
//   kAboveAll:  faster at every measured rate: B* > the highest rate (lo = that rate).
//   kBelowAll:  never faster: B* < the lowest rate (hi = that rate).
//   kEmpty:     no usable point.
// `monotone` is false when some rate below `lo` already had speed-up <= 1 (noise or a real dip);
// the bracket still uses the highest faster rate.
struct BreakEven {
  enum class Kind { kEmpty, kBracketed, kAboveAll, kBelowAll };
  Kind kind = Kind::kEmpty;
  double lo_gbps = 0, hi_gbps = 0, estimate_gbps = 0;
  std::string lo_label, hi_label;
  bool monotone = true;
};
BreakEven FindBreakEven(std::vector<RatePoint> points);
const char* BreakEvenKindName(BreakEven::Kind kind);

// The paper's analytic break-even (CODECS.md §5.5, eq. 1) for sequential compress → send → decompress:
// compressing pays iff t_c + t_d < (1 − 1/r)·|C|/B, so B* = 8·(1 − 1/r) / (1/enc + 1/dec) Gbit/s with
// encode/decode throughputs in GB/s of uncompressed bytes. Pipelined (stages overlap, the slowest
// one sets the pace): compressed is faster iff max(t_c, t_d, |C|/(r·B)) < |C|/B, so
// B* = 8·min(enc, dec) Gbit/s for r > 1. Both return 0 when r <= 1 or a throughput is not positive.
double AnalyticBreakEvenSequentialGbps(double ratio, double encode_gbps, double decode_gbps);
double AnalyticBreakEvenPipelinedGbps(double ratio, double encode_gbps, double decode_gbps);

// ---- the sweep's JSON records ----------------------------------------------------------------------

struct RateInfo {
  std::string label;    // "10gbit", "veth", "loopback"
  double nominal = 0;   // tbf rate in Gbit/s; 0 unshaped
  double order = 0;     // RatePoint::order
};

// One point's record from kvs-bench transfer's run record (RunTransfer JSON `runs[i]`): rate, input,
// codec, mode, handoff spread (Summarize over handoff_repeats_ms), the analytic predictions at the
// measured link rate and the deviations; `run` keeps the transfer record (without chunk timings
// unless keep_chunks).
nlohmann::json PointRecord(nlohmann::json run, const RateInfo& rate, const std::string& model,
                           const std::string& input, const nlohmann::json& geometry, bool keep_chunks);

// Adds speedup_vs_identity (identity's median handoff / the point's, same input, mode and rate),
// identity_handoff_ms and speedup_vs_analytic_raw to every point; returns the break-even entries, one
// per (input, codec, mode) with an identity reference, FindBreakEven over the rates.
nlohmann::json AnalysePoints(nlohmann::json* points);

// "14.4 Gbit/s (between veth = 9.04 and loopback = 14.99)" and the like, for a break-even entry.
std::string DescribeBreakEven(const nlohmann::json& entry);

}  // namespace kvs::bench
