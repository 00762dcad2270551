// common/synth/synthetic_kv.h — deterministic KV caches with realistic structure, for tests and
// benchmarks when no real KV dump is at hand.
//
// Structure (stated by every tool that uses it): keys ~ N(0, 1) with max(1, D/32) outlier channels
// per (layer, head) scaled 4–12x and a slow drift along tokens (as post-RoPE keys of real models
// show); values ~ N(0, 0.25^2)... i.e. std 0.5 — smaller variance than keys, no outlier channels.
// `kGaussian` gives the plain N(0,1) K and V of the KVShuttle test fixtures.
// The generator is our own (SplitMix64 + Box–Muller), so a seed gives the same bits everywhere.
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor/kv.h"

namespace kvs {

enum class SynthKind { kRealistic, kGaussian };

struct OwnedKv {
  KvGeometry geom;
  std::vector<uint16_t> k;  // fp16 bits
  std::vector<uint16_t> v;

  KvCacheView view() const {
    return {KvTensorView{k.data(), geom, DType::kF16}, KvTensorView{v.data(), geom, DType::kF16}};
  }
  MutableKvCacheView mutable_view() {
    return {MutableKvTensorView{k.data(), geom, DType::kF16},
            MutableKvTensorView{v.data(), geom, DType::kF16}};
  }
  static OwnedKv Zeros(const KvGeometry& g);
};

OwnedKv MakeSyntheticKv(const KvGeometry& g, uint64_t seed, SynthKind kind = SynthKind::kRealistic);

// Loads a real KV cache from two fp16 [L,H,S,D] .npy files (K and V of the same shape).
absl::StatusOr<OwnedKv> ReadKvNpy(const std::string& keys_path, const std::string& values_path);

// One line saying what MakeSyntheticKv(kind) generates, for tool output.
absl::string_view DescribeSynthetic(SynthKind kind);

}  // namespace kvs
