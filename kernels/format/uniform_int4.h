// kernels/format/uniform_int4.h — grouped INT4 sections and the uniform_int4 payload body
// (CODECS.md §2.6).
//
// int4 sections of n values (flattened, zero-padded to a multiple of 128, groups of 128):
//   packed  u8  [64·G]  two codes per byte, element 2j in the high nibble (G = ⌈n/128⌉)
//   scales  f32 [G]     (max - min) / 15, or 1.0 when max == min
//   zeros   f32 [G]     min
// uniform_int4 body (N = L·H·S·D elements per tensor), back to back, little-endian, unaligned:
//   Kpacked ‖ Vpacked ‖ Kscales ‖ Vscales ‖ Kzeros ‖ Vzeros       (the reference's order)
//   body bytes = 2·(64·G + 8·G), G = ⌈N/128⌉   (4.5 bits/element; ratio 3.556 at D = 128)
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"

namespace kvs::format {

inline constexpr uint64_t kInt4Group = 128;
inline uint64_t Int4Groups(uint64_t n) { return (n + kInt4Group - 1) / kInt4Group; }
inline uint64_t Int4PackedBytes(uint64_t n) { return Int4Groups(n) * (kInt4Group / 2); }
// packed + scales + zeros of n values: the int4(n) of CODECS.md §1.5
inline uint64_t Int4SectionBytes(uint64_t n) { return Int4PackedBytes(n) + 8 * Int4Groups(n); }

inline uint64_t UniformInt4BodyBytes(const KvGeometry& g) {
  return 2 * Int4SectionBytes(static_cast<uint64_t>(g.elements()));
}

}  // namespace kvs::format
