// kernels/format/mixed_k8v4.h — mixed_k8v4 payload body (CODECS.md §2.14): keys as uniform_int8,
// values as uniform_int4.
//
// Body (N = L·H·S·D elements per tensor, G = ⌈N/128⌉), back to back, little-endian, unaligned:
//   Kq       int8 [N]     K codes, per-layer symmetric (kernels/format/uniform_int8.h)
//   Vpacked  u8   [64·G]  V int4 codes (kernels/format/uniform_int4.h)
//   Vscales  f32  [G]
//   Vzeros   f32  [G]
//   Ks       f32  [L]     K per-layer scales (the reference keeps them in its JSON metadata)
//   body bytes = N + 72·G + 4·L   (6.25 bits/element; ratio 2.560 at D = 128)
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"
#include "kernels/format/uniform_int4.h"

namespace kvs::format {

inline uint64_t MixedK8V4BodyBytes(const KvGeometry& g) {
  const uint64_t n = static_cast<uint64_t>(g.elements());
  return n + Int4SectionBytes(n) + 4 * static_cast<uint64_t>(g.layers);
}

}  // namespace kvs::format
