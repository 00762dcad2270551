// services/control/serving_model.h — the model a daemon serves: weights (services/runner/), the
// tokenizer and chat template from the same GGUF file, and the model fingerprint the control
// plane compares between kvs-prefill and kvs-decode.
//
//   KVS_ASSIGN_OR_RETURN(auto m, control::ServingModel::Load("stories260K.gguf", /*threads=*/2));
//   KVS_ASSIGN_OR_RETURN(std::vector<int32_t> ids, m->EncodePrompt("Once upon a time", false));
//   KVS_ASSIGN_OR_RETURN(kvs::PrefillResult p, m->model().Prefill(ids));
//
// The fingerprint is the first 128 bits of SHA-256 over the whole file (weights and every
// metadata key), in hex: two daemons agree only when they load byte-identical models.
//
// Thread-safety: immutable after Load(); every method may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/runner/generate.h"
#include "services/runner/model.h"
#include "services/runner/tokenizer.h"

namespace kvs::control {

class ServingModel {
 public:
  // threads: libtorch intra-op threads (0 = hardware concurrency).
  static absl::StatusOr<std::unique_ptr<ServingModel>> Load(const std::string& path, int threads);

  const LlamaModel& model() const { return *model_; }
  const ModelConfig& config() const { return model_->config(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const std::string& name() const { return name_; }  // general.name, else the file's stem
  const std::string& path() const { return path_; }
  // The context this daemon serves: the trained context length (at least 1).
  int64_t max_context() const;

  // Prompt text -> ids, exactly as kvs-generate does: the tokenizer's default BOS, and with
  // `chat` the model's chat template around a user message (INVALID_ARGUMENT without one).
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(absl::string_view text, bool chat) const;
  bool IsStop(int32_t token) const;

 private:
  ServingModel() = default;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ChatTemplate> chat_;  // null when the file has none
  std::string fingerprint_;
  std::string name_;
  std::string path_;
};

// SHA-256 of a file's bytes, first 16 bytes as 32 lowercase hex digits.
absl::StatusOr<std::string> FileFingerprint(const std::string& path);

// Samples like kvs::Sampler; `skip` draws are consumed first, so that decode continuing after
// the prefill's first token draws exactly what one uninterrupted kvs-generate run would.
Sampler MakeSampler(float temperature, float top_p, uint64_t seed, int skip);

}  // namespace kvs::control
