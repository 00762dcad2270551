// kernels/format/uniform_int8.h — uniform_int8 payload body (CODECS.md §2.5).
//
// Body (N = L·H·S·D elements per tensor), sections back to back, little-endian, unaligned:
//   Kq  int8 [N]   K codes, [L,H,S,D] order, q = clip(rint(x / scale_l), -127, 127)
//   Vq  int8 [N]   V codes
//   Ks  f32  [L]   K per-layer scales, amax_l / 127 (1.0 when amax_l == 0)
//   Vs  f32  [L]   V per-layer scales
// The reference keeps Kq ‖ Vq as its data and the scales in its JSON metadata.
//   body bytes = 2·N + 8·L   (ratio 4N / (32 + 2N + 8L) -> 2.000 at Llama-3.1-8B, S = 1024)
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"

namespace kvs::format {

inline uint64_t UniformInt8BodyBytes(const KvGeometry& g) {
  return 2 * static_cast<uint64_t>(g.elements()) + 8 * static_cast<uint64_t>(g.layers);
}

}  // namespace kvs::format
