// common/tensor/presets.h — KV geometries of the models in the KVShuttle paper
// (CODECS.md §4.1), by short name.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor/kv.h"

namespace kvs {

struct ModelPreset {
  std::string name;
  int64_t layers, kv_heads, head_dim;
};

const std::vector<ModelPreset>& ModelPresets();
// Geometry of `model` at `tokens`; NotFound lists the known names.
absl::StatusOr<KvGeometry> PresetGeometry(const std::string& model, int64_t tokens);

}  // namespace kvs
