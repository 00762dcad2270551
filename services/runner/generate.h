// services/runner/generate.h — sampling and the decode loop over a LlamaModel.
//
//   kvs::GenerateOptions g;
//   g.max_tokens = 64;
//   g.stop_tokens = tokenizer->stop_tokens();
//   KVS_ASSIGN_OR_RETURN(kvs::PrefillResult p, model->Prefill(prompt));
//   KVS_ASSIGN_OR_RETURN(std::vector<int32_t> out,
//                        kvs::Generate(*model, &p.cache, p.last_logits, g));
//
// Thread-safety: a Sampler is not thread-safe (it owns its random generator); Generate() is
// reentrant for distinct caches.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "services/runner/model.h"

namespace kvs {

struct SamplingOptions {
  double temperature = 0.0;  // <= 0: greedy (argmax, first on ties)
  double top_p = 1.0;        // nucleus: sample among the smallest set whose mass reaches top_p
  uint64_t seed = 0;         // the generator's seed; same seed, same tokens
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int32_t Sample(absl::Span<const float> logits);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<double, int32_t>> scratch_;
};

struct GenerateOptions {
  int max_tokens = 64;
  SamplingOptions sampling;
  // Generation ends after one of these is produced (it is returned, not fed back). Empty: run
  // max_tokens.
  std::vector<int32_t> stop_tokens;
};

// Samples the first token from `logits` (the prompt's last logits), then steps the model on each
// token it produces. Returns the generated tokens; `on_token`, when set, sees each as it comes.
// The cache grows by every token fed back.
absl::StatusOr<std::vector<int32_t>> Generate(const LlamaModel& model, KvCache* cache,
                                              std::vector<float> logits,
                                              const GenerateOptions& options,
                                              const std::function<void(int32_t)>& on_token = {});

}  // namespace kvs
