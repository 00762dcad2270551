// services/runner/quality.h — end-to-end quality metrics of a reconstructed KV cache
// (CODECS.md §4, the KVShuttle paper's protocol) and plain perplexity. No libtorch here.
//
//   kvs::TeacherForcedSplit s = kvs::PaperSplit(prompt.size());   // 80 % / >= 10 tokens
//   // logits_ref / logits_rec: model.Score(prefix cache, continuation) with the original and the
//   // reconstructed prefix KV.
//   double ta = kvs::TokenAgreement(logits_ref, logits_rec);
//   double dppl = kvs::Perplexity(logits_rec, cont).value() - kvs::Perplexity(logits_ref, cont).value();
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "services/runner/model.h"

namespace kvs {

// The paper's split of a T-token prompt: prefix [0, p), continuation [p, T) with
// p = max(1, floor(0.8 T)), then p = min(p, T - 10) when T > 10 (at least 10 continuation tokens).
struct TeacherForcedSplit {
  int64_t prefix = 0;
  int64_t continuation = 0;
};
TeacherForcedSplit PaperSplit(int64_t tokens);

// Fraction of rows whose argmax agrees (CODECS.md §4.4). Rows must match; 0 rows gives 1.
absl::StatusOr<double> TokenAgreement(const Logits& reference, const Logits& test);

// exp(mean NLL) of targets[1..m) under rows [0, m-1) of `logits` (row i predicts targets[i+1]),
// log-softmax in fp64 (CODECS.md §4.5). `logits` must have m rows; m >= 2.
absl::StatusOr<double> Perplexity(const Logits& logits, absl::Span<const int32_t> targets);
// Sum of those NLLs and their count, for pooling over windows.
absl::StatusOr<std::pair<double, int64_t>> NllSum(const Logits& logits,
                                                  absl::Span<const int32_t> targets);

// Position-wise agreement of two generated sequences over the reference's length (a missing
// position counts as a disagreement), and the index of the first difference (= length when none).
struct SequenceAgreement {
  double fraction = 1.0;
  int64_t first_divergence = 0;
};
SequenceAgreement CompareSequences(absl::Span<const int32_t> reference,
                                   absl::Span<const int32_t> test);

// Percentile bootstrap of the mean (CODECS.md §4.6: 10,000 resamples, seed 42).
struct BootstrapInterval {
  double mean = 0, lo = 0, hi = 0;  // 95 % interval [lo, hi]
};
BootstrapInterval BootstrapMean(absl::Span<const double> values, int resamples = 10000,
                                uint64_t seed = 42, double confidence = 0.95);

// Perplexity of `tokens` cut into consecutive non-overlapping windows of `window` tokens (at
// most `max_windows`; the tail shorter than a window is dropped), each window scored from an
// empty cache in one forward pass, NLLs pooled over all windows.
struct WindowPerplexity {
  double perplexity = 0;
  int64_t windows = 0;
  int64_t scored_tokens = 0;
  std::vector<double> per_window;
};
absl::StatusOr<WindowPerplexity> MeasureWindowPerplexity(const LlamaModel& model,
                                                         absl::Span<const int32_t> tokens,
                                                         int64_t window, int64_t max_windows);

}  // namespace kvs
