// kernels/format/kivi_2bit.h — the kivi_2bit payload body (CODECS.md §2.7), byte for byte the
// KVShuttle reference's `data` (its JSON metadata holds nothing that the geometry does not give).
//
// N = L·H·S·D elements per tensor. Sections back to back, no alignment padding, little-endian:
//   K codes    ⌈N/4⌉ B    2-bit codes of K in [L,H,S,D] order, 4 per byte MSB-first, zero-padded
//   V codes    ⌈N/4⌉ B    the same for V
//   K scales   L·H·D f32  per (layer, head, channel), over the S tokens
//   V scales   L·H·S f32  per (layer, head, token), over the D channels
//   K zeros    L·H·D f32
//   V zeros    L·H·S f32
// body bytes = 2·⌈N/4⌉ + 8·L·H·D + 8·L·H·S; payload = 32 + body (ratio 7.014 at S=1024, D=128).
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"

namespace kvs::format {

inline constexpr int kKivi2BitQmax = 3;

// Byte offsets of the sections within the body, and the body size.
struct Kivi2BitSections {
  uint64_t k_codes, v_codes, k_scales, v_scales, k_zeros, v_zeros, total;
};

inline Kivi2BitSections Kivi2BitLayout(const KvGeometry& g) {
  const uint64_t n = static_cast<uint64_t>(g.elements());
  const uint64_t packed = (n + 3) / 4;
  const uint64_t per_channel = 4 * static_cast<uint64_t>(g.layers * g.heads * g.head_dim);
  const uint64_t per_token = 4 * static_cast<uint64_t>(g.layers * g.heads * g.tokens);
  Kivi2BitSections s;
  s.k_codes = 0;
  s.v_codes = packed;
  s.k_scales = 2 * packed;
  s.v_scales = s.k_scales + per_channel;
  s.k_zeros = s.v_scales + per_token;
  s.v_zeros = s.k_zeros + per_channel;
  s.total = s.v_zeros + per_token;
  return s;
}

inline uint64_t Kivi2BitBodyBytes(const KvGeometry& g) { return Kivi2BitLayout(g).total; }

}  // namespace kvs::format
