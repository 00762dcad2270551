// services/runner/quality.cc — quality metrics (no libtorch here).
#include "services/runner/quality.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status/status.h"

namespace kvs {

TeacherForcedSplit PaperSplit(int64_t tokens) {
  int64_t p = std::max<int64_t>(1, static_cast<int64_t>(std::floor(0.8 * static_cast<double>(tokens))));
  if (tokens > 10) p = std::min(p, tokens - 10);
  p = std::min(p, tokens);
  return {p, tokens - p};
}

absl::StatusOr<double> TokenAgreement(const Logits& reference, const Logits& test) {
  if (reference.rows != test.rows || reference.vocab != test.vocab) {
    return absl::InvalidArgumentError(absl::StrCat("token agreement: ", reference.rows, "x",
                                                   reference.vocab, " vs ", test.rows, "x",
                                                   test.vocab, " logits"));
  }
  if (reference.rows == 0) return 1.0;
  int64_t same = 0;
  for (int64_t i = 0; i < reference.rows; ++i) {
    same += ArgMax(reference.Row(i)) == ArgMax(test.Row(i));
  }
  return static_cast<double>(same) / static_cast<double>(reference.rows);
}

absl::StatusOr<std::pair<double, int64_t>> NllSum(const Logits& logits,
                                                  absl::Span<const int32_t> targets) {
  const int64_t m = static_cast<int64_t>(targets.size());
  if (m < 2 || logits.rows != m) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity: ", logits.rows, " logit rows for ",
                                                   m, " targets (want equal, >= 2)"));
  }
  double nll = 0;
  for (int64_t i = 0; i + 1 < m; ++i) {
    const int32_t t = targets[i + 1];
    if (t < 0 || t >= logits.vocab) {
      return absl::InvalidArgumentError(absl::StrCat("perplexity: target ", t, " outside the vocabulary"));
    }
    absl::Span<const float> row = logits.Row(i);
    double max = row[0];
    for (float x : row) max = std::max(max, static_cast<double>(x));
    double sum = 0;
    for (float x : row) sum += std::exp(static_cast<double>(x) - max);
    nll += (max + std::log(sum)) - static_cast<double>(row[t]);
  }
  return std::make_pair(nll, m - 1);
}

absl::StatusOr<double> Perplexity(const Logits& logits, absl::Span<const int32_t> targets) {
  KVS_ASSIGN_OR_RETURN(auto s, NllSum(logits, targets));
  return std::exp(s.first / static_cast<double>(s.second));
}

SequenceAgreement CompareSequences(absl::Span<const int32_t> reference,
                                   absl::Span<const int32_t> test) {
  SequenceAgreement r;
  const int64_t n = static_cast<int64_t>(reference.size());
  r.first_divergence = n;
  if (n == 0) return r;
  int64_t same = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool eq = i < static_cast<int64_t>(test.size()) && test[i] == reference[i];
    same += eq;
    if (!eq && r.first_divergence == n) r.first_divergence = i;
  }
  r.fraction = static_cast<double>(same) / static_cast<double>(n);
  return r;
}

BootstrapInterval BootstrapMean(absl::Span<const double> values, int resamples, uint64_t seed,
                                double confidence) {
  BootstrapInterval b;
  const size_t n = values.size();
  if (n == 0) return b;
  double sum = 0;
  for (double v : values) sum += v;
  b.mean = sum / static_cast<double>(n);
  if (n == 1 || resamples <= 0) {
    b.lo = b.hi = b.mean;
    return b;
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  std::vector<double> means(static_cast<size_t>(resamples));
  for (double& m : means) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += values[pick(rng)];
    m = s / static_cast<double>(n);
  }
  std::sort(means.begin(), means.end());
  // numpy.percentile's default (linear interpolation between closest ranks).
  auto pct = [&](double q) {
    const double pos = q * static_cast<double>(means.size() - 1);
    const size_t i = static_cast<size_t>(std::floor(pos));
    const size_t j = std::min(i + 1, means.size() - 1);
    return means[i] + (pos - static_cast<double>(i)) * (means[j] - means[i]);
  };
  const double alpha = (1.0 - confidence) / 2.0;
  b.lo = pct(alpha);
  b.hi = pct(1.0 - alpha);
  return b;
}

absl::StatusOr<WindowPerplexity> MeasureWindowPerplexity(const LlamaModel& model,
                                                         absl::Span<const int32_t> tokens,
                                                         int64_t window, int64_t max_windows) {
  if (window < 2) return absl::InvalidArgumentError("perplexity: window must be >= 2 tokens");
  WindowPerplexity r;
  double nll = 0;
  for (int64_t w = 0; w < max_windows; ++w) {
    const int64_t begin = w * window;
    if (begin + window > static_cast<int64_t>(tokens.size())) break;
    absl::Span<const int32_t> win = tokens.subspan(static_cast<size_t>(begin), static_cast<size_t>(window));
    KvCache cache = model.NewCache();
    KVS_ASSIGN_OR_RETURN(Logits l, model.Extend(&cache, win, /*all_logits=*/true));
    KVS_ASSIGN_OR_RETURN(auto s, NllSum(l, win));
    nll += s.first;
    r.scored_tokens += s.second;
    r.per_window.push_back(std::exp(s.first / static_cast<double>(s.second)));
    ++r.windows;
  }
  if (r.windows == 0) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity: ", tokens.size(),
                                                   " tokens do not fill one window of ", window));
  }
  r.perplexity = std::exp(nll / static_cast<double>(r.scored_tokens));
  return r;
}

}  // namespace kvs
