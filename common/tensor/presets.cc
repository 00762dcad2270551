#include "common/tensor/presets.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvs {

const std::vector<ModelPreset>& ModelPresets() {
  static const auto* presets = new std::vector<ModelPreset>{
      {"qwen2.5-3b", 36, 2, 128},   {"llama-3.2-3b", 28, 8, 128}, {"phi-3.5-mini", 32, 32, 96},
      {"qwen2.5-7b", 28, 4, 128},   {"llama-3.1-8b", 32, 8, 128}, {"mistral-7b", 32, 8, 128},
      {"llama-3.1-70b", 80, 8, 128}, {"smollm2-135m", 30, 3, 64},
  };
  return *presets;
}

absl::StatusOr<KvGeometry> PresetGeometry(const std::string& model, int64_t tokens) {
  std::vector<std::string> names;
  for (const ModelPreset& p : ModelPresets()) {
    if (p.name == model) return KvGeometry{p.layers, p.kv_heads, tokens, p.head_dim};
    names.push_back(p.name);
  }
  return absl::NotFoundError(
      absl::StrCat("unknown model '", model, "'; known: ", absl::StrJoin(names, ", ")));
}

}  // namespace kvs
