// kernels/format/palu.h — palu_lr and palu_int4 payload bodies (CODECS.md §2.10, §2.13).
//
// Both store, for every (layer, head) slice A = K[l,h] or V[l,h] ([S, D]), the rank-r truncated
// SVD A ≈ US_r · Vᵀ_r with US_r = U[:, :r]·diag(σ₁..σ_r) ([S, r]) and Vᵀ_r ([r, D]);
// r = max(1, ⌊min(S, D)/4⌋), the same for every slice, K and V. Sections follow each other with no
// padding, little-endian, unaligned.
//
// palu_lr, slices in (l, h) order, all K slices then all V slices, each slice:
//   US_r fp16 [S, r] ‖ Vᵀ_r fp16 [r, D]
//   body bytes = 2 tensors · L·H · 2·r·(S + D) = 4·L·H·r·(S + D)    (ratio 3.556 at S=1024, D=128)
// palu_int4: per tensor the fp32 factor array F [L, H, S + D, r] (rows 0..S-1 of a slice = US_r,
// rows S..S+D-1 = V_r = (Vᵀ_r)ᵀ), quantised with grouped INT4 (CODECS.md §2.6: groups of 128
// consecutive values of the flattened F, zero-padded at the end; G = ⌈L·H·(S+D)·r / 128⌉):
//   Kpacked u8[64·G] ‖ Vpacked u8[64·G] ‖ Kscales f32[G] ‖ Vscales ‖ Kzeros f32[G] ‖ Vzeros
//   body bytes = 2·(64·G + 8·G)                                  (ratio 12.64 at S=1024, D=128)
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"

namespace kvs::format {

// r = max(1, ⌊min(S, D) · 0.25⌋).
inline int64_t PaluRank(const KvGeometry& g) {
  const int64_t m = g.tokens < g.head_dim ? g.tokens : g.head_dim;
  return m / 4 > 0 ? m / 4 : 1;
}

// fp16 values of one palu_lr slice record: r·(S + D).
inline uint64_t PaluSliceValues(const KvGeometry& g) {
  return static_cast<uint64_t>(PaluRank(g) * (g.tokens + g.head_dim));
}

inline uint64_t PaluLrBodyBytes(const KvGeometry& g) {
  return 4 * static_cast<uint64_t>(g.layers * g.heads) * PaluSliceValues(g);
}

// Byte offsets of the palu_int4 sections; factor values per tensor = L·H·(S + D)·r.
struct PaluInt4Sections {
  explicit PaluInt4Sections(const KvGeometry& g)
      : values(static_cast<uint64_t>(g.layers * g.heads) * PaluSliceValues(g)),
        groups((values + 127) / 128) {}
  uint64_t values;  // per tensor
  uint64_t groups;  // G
  uint64_t packed() const { return 64 * groups; }
  uint64_t k_packed() const { return 0; }
  uint64_t v_packed() const { return packed(); }
  uint64_t k_scales() const { return 2 * packed(); }
  uint64_t v_scales() const { return 2 * packed() + 4 * groups; }
  uint64_t k_zeros() const { return 2 * packed() + 8 * groups; }
  uint64_t v_zeros() const { return 2 * packed() + 12 * groups; }
  uint64_t body() const { return 2 * packed() + 16 * groups; }
};

inline uint64_t PaluInt4BodyBytes(const KvGeometry& g) { return PaluInt4Sections(g).body(); }

}  // namespace kvs::format
