// tests/testing/test_data.h — where the project's committed test data lives, and loaders.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/synth/synthetic_kv.h"

namespace kvs::testing {

// tests/data inside the source tree (compiled in; tests need no environment).
std::string TestDataDir();

// Loads <dir>/<name>.npy as an fp16 [L,H,S,D] tensor.
absl::StatusOr<std::vector<uint16_t>> LoadF16(const std::string& path, KvGeometry* geom);

// A golden input pair tests/data/golden/<tag>_{K,V}.npy.
absl::StatusOr<OwnedKv> LoadGoldenInput(const std::string& tag);
// The KVShuttle reference's decode(encode(x)) for `codec` on input `tag`.
absl::StatusOr<OwnedKv> LoadGoldenOutput(const std::string& tag, const std::string& codec);

struct GoldenEntry {
  std::string input, codec;
  long long data_bytes;       // the reference's payload bytes, JSON metadata excluded
  double reference_ratio;     // the reference's ratio, JSON metadata included
};
// Parses tests/data/golden/index.json.
absl::StatusOr<std::vector<GoldenEntry>> LoadGoldenIndex();

// The three golden inputs.
std::vector<std::string> GoldenTags();

}  // namespace kvs::testing
