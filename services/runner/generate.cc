// services/runner/generate.cc — sampling and the decode loop (no libtorch here).
#include "services/runner/generate.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "common/status/status.h"

namespace kvs {

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  if (logits.empty()) return -1;
  if (options_.temperature <= 0.0) return ArgMax(logits);
  // Softmax at temperature T in double, highest first.
  const double inv_t = 1.0 / options_.temperature;
  const float max = *std::max_element(logits.begin(), logits.end());
  scratch_.resize(logits.size());
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp((static_cast<double>(logits[i]) - max) * inv_t);
    scratch_[i] = {p, static_cast<int32_t>(i)};
    total += p;
  }
  std::sort(scratch_.begin(), scratch_.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  // Nucleus: keep the shortest head whose mass reaches top_p (at least one token).
  size_t keep = scratch_.size();
  if (options_.top_p < 1.0) {
    double mass = 0;
    for (size_t i = 0; i < scratch_.size(); ++i) {
      mass += scratch_[i].first / total;
      if (mass >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += scratch_[i].first;
  const double u = std::uniform_real_distribution<double>(0.0, kept)(rng_);
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += scratch_[i].first;
    if (u < acc) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

absl::StatusOr<std::vector<int32_t>> Generate(const LlamaModel& model, KvCache* cache,
                                              std::vector<float> logits,
                                              const GenerateOptions& options,
                                              const std::function<void(int32_t)>& on_token) {
  Sampler sampler(options.sampling);
  std::vector<int32_t> out;
  for (int i = 0; i < options.max_tokens; ++i) {
    const int32_t t = sampler.Sample(logits);
    out.push_back(t);
    if (on_token) on_token(t);
    if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), t) !=
        options.stop_tokens.end()) {
      break;
    }
    if (i + 1 == options.max_tokens) break;
    KVS_ASSIGN_OR_RETURN(logits, model.Step(cache, t));
  }
  return out;
}

}  // namespace kvs
