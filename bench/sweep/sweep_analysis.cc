#include "bench/sweep/sweep_analysis.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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

// ---- point records -------------------------------------------------------------------------------

namespace {

double Num(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

nlohmann::json Nullable(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace

nlohmann::json PointRecord(nlohmann::json run, const RateInfo& rate, const std::string& model,
                           const std::string& input, const nlohmann::json& geometry, bool keep_chunks) {
  if (!keep_chunks) run.erase("chunk_timings");
  nlohmann::json p;
  p["rate"] = rate.label;
  p["rate_nominal_gbps"] = rate.nominal;
  p["rate_order"] = rate.order;
  p["link_gbps"] = Num(run, "baseline_gbps");
  p["model"] = model;
  p["input"] = input;
  p["tokens"] = geometry["tokens"];
  p["geometry"] = geometry;
  p["codec"] = run["codec"];
  p["mode"] = run["pipelined"].get<bool>() ? "pipelined" : "sequential";
  std::vector<double> reps;
  for (const auto& v : run["handoff_repeats_ms"]) reps.push_back(v.get<double>());
  const Spread s = Summarize(reps);
  p["handoff_ms"] = {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"q1", s.q1}, {"q3", s.q3},
                     {"n", s.n}, {"repeats", reps}};
  const double handoff = Num(run, "handoff_ms");
  const double a_mode = Num(run, "analytic_ms");
  const double a_x = Num(run, "analytic_transfer_ms");
  const double a_seq = Num(run, "analytic_sequential_ms");
  const double a_pipe = Num(run, "analytic_pipelined_ms");
  const double a_raw = Num(run, "analytic_raw_ms");
  p["analytic"] = {
      {"link_gbps", Num(run, "baseline_gbps")},
      {"transfer_ms", a_x},       // wire bytes / measured link rate (the paper's formula)
      {"raw_ms", a_raw},          // raw K+V bytes / measured link rate
      {"sequential_ms", a_seq},   // Σ encode + wire bytes / rate + Σ decode (this run's stage times)
      {"pipelined_ms", a_pipe},   // (c0 + x0 + d0) + (n − 1)·max(mean c, mean x, mean d)
      {"mode_ms", a_mode},        // the one of the two for this point's mode
  };
  p["deviation"] = {
      {"handoff_vs_mode", Nullable(RelativeDeviation(handoff, a_mode))},
      {"handoff_vs_transfer_only", Nullable(RelativeDeviation(handoff, a_x))},
      {"wire_vs_transfer", Nullable(RelativeDeviation(Num(run, "wire_ms"), a_x))},
  };
  p["run"] = std::move(run);  // kvs-bench transfer's record: stages, bytes, ratio, verified, ...
  return p;
}

namespace {

std::string Key(const nlohmann::json& p, bool with_codec, bool with_rate) {
  std::string k = absl::StrCat(p["model"].get<std::string>(), "|", p["tokens"].get<int64_t>(), "|",
                               p["mode"].get<std::string>());
  if (with_codec) absl::StrAppend(&k, "|", p["codec"].get<std::string>());
  if (with_rate) absl::StrAppend(&k, "|", p["rate"].get<std::string>());
  return k;
}

}  // namespace

nlohmann::json AnalysePoints(nlohmann::json* points) {
  std::map<std::string, const nlohmann::json*> identity;
  for (const auto& p : *points) {
    if (p["codec"] == "identity") identity[Key(p, false, true)] = &p;
  }
  std::map<std::string, std::vector<RatePoint>> series;
  std::map<std::string, nlohmann::json> series_id;
  for (auto& p : *points) {
    const double h = p["handoff_ms"]["median"].get<double>();
    const double a_raw = p["analytic"]["raw_ms"].get<double>();
    p["speedup_vs_analytic_raw"] = Nullable(h > 0 && a_raw > 0 ? a_raw / h : NAN);
    auto it = identity.find(Key(p, false, true));
    if (it == identity.end()) continue;
    const double raw = (*it->second)["handoff_ms"]["median"].get<double>();
    p["identity_handoff_ms"] = raw;
    p["speedup_vs_identity"] = Nullable(h > 0 ? raw / h : NAN);
    if (p["codec"] == "identity") continue;
    const std::string k = Key(p, true, false);
    series[k].push_back({p["rate"].get<std::string>(), p["link_gbps"].get<double>(), raw, h,
                         p["rate_order"].get<double>()});
    series_id[k] = {{"model", p["model"]}, {"tokens", p["tokens"]}, {"codec", p["codec"]}, {"mode", p["mode"]},
                    {"ratio", p["run"]["ratio"]}};
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [k, pts] : series) {
    const BreakEven b = FindBreakEven(pts);
    nlohmann::json j = series_id[k];
    j["kind"] = BreakEvenKindName(b.kind);
    j["lo_gbps"] = b.lo_gbps;
    j["hi_gbps"] = b.hi_gbps;
    j["lo_rate"] = b.lo_label;
    j["hi_rate"] = b.hi_label;
    j["estimate_gbps"] = b.estimate_gbps;
    j["monotone"] = b.monotone;
    nlohmann::json sp = nlohmann::json::array();
    for (const RatePoint& r : pts) {
      sp.push_back({{"rate", r.label}, {"link_gbps", r.link_gbps}, {"raw_ms", r.raw_ms}, {"codec_ms", r.codec_ms},
                    {"speedup", r.raw_ms / r.codec_ms}, {"order", r.order}});
    }
    j["points"] = sp;
    out.push_back(j);
  }
  return out;
}

std::string DescribeBreakEven(const nlohmann::json& b) {
  const std::string kind = b["kind"];
  const bool monotone = !b.contains("monotone") || b["monotone"].get<bool>();
  const std::string note = monotone ? "" : "; slower at some lower rate: non-monotone";
  if (kind == "bracketed") {
    return absl::StrFormat("%.1f Gbit/s (between %s = %.2f and %s = %.2f%s)", b["estimate_gbps"].get<double>(),
                           b["lo_rate"].get<std::string>(), b["lo_gbps"].get<double>(),
                           b["hi_rate"].get<std::string>(), b["hi_gbps"].get<double>(), note);
  }
  if (kind == "above_all") {
    return absl::StrFormat("> %.2f Gbit/s (faster on the top link, %s%s)", b["lo_gbps"].get<double>(),
                           b["lo_rate"].get<std::string>(), note);
  }
  if (kind == "below_all") {
    return absl::StrFormat("< %.2f Gbit/s (slower already at %s)", b["hi_gbps"].get<double>(),
                           b["hi_rate"].get<std::string>());
  }
  return "no data";
}

}  // namespace kvs::bench
