// kernels/format/kvquant_2bit.h — the kvquant_2bit payload body (CODECS.md §2.8), byte for byte
// the KVShuttle reference's `data` (its JSON metadata holds nothing that the geometry does not
// give: k_len is half the body).
//
// body = K blob ‖ V blob, both of the same size. One blob, little-endian, no alignment padding:
//   u32 len[7]          byte lengths of the seven sections that follow
//   s0  u32 n_out, u32 n_normal                         8 B
//   s1  outlier channel indices, u32 × n_out            4·n_out B
//   s2  normal channel indices, u32 × n_normal, ascending   4·n_normal B
//   s3  outlier channels, fp16 [L, H, S, n_out]          2·L·H·S·n_out B
//   s4  2-bit codes of the normal channels, layer after layer, each [H, S, n_normal] in C
//       order, 4 per byte MSB-first, zero-padded at the end      ⌈L·H·S·n_normal/4⌉ B
//   s5  per-layer scale, f32 × L                         4·L B
//   s6  per-layer zero, f32 × L                          4·L B
// n_out = max(1, ⌊D·1%⌋) (1 for D = 128 and D = 96), n_normal = D − n_out; the sections are
// therefore fixed by the geometry and a decoder requires exactly these lengths and counts.
// blob bytes = 28 + 8 + 4·D + 2·L·H·S·n_out + ⌈L·H·S·(D − n_out)/4⌉ + 8·L (ratio 7.584 at
// S=1024, D=128).
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"

namespace kvs::format {

inline constexpr int kKvquant2BitQmax = 3;
inline constexpr int kKvquant2BitSections = 7;

inline int64_t Kvquant2BitOutliers(int64_t head_dim) {
  return head_dim / 100 > 1 ? head_dim / 100 : 1;
}

struct Kvquant2BitBlob {
  uint64_t len[kKvquant2BitSections];  // section byte lengths, as the blob's header states them
  uint64_t total;                      // blob bytes, header included
};

inline Kvquant2BitBlob Kvquant2BitBlobLayout(const KvGeometry& g) {
  const uint64_t n_out = static_cast<uint64_t>(Kvquant2BitOutliers(g.head_dim));
  const uint64_t n_normal = static_cast<uint64_t>(g.head_dim) - n_out;
  const uint64_t rows = static_cast<uint64_t>(g.layers * g.heads * g.tokens);
  const uint64_t L = static_cast<uint64_t>(g.layers);
  Kvquant2BitBlob b{
      {8, 4 * n_out, 4 * n_normal, 2 * rows * n_out, (rows * n_normal + 3) / 4, 4 * L, 4 * L},
      4 * kKvquant2BitSections};
  for (uint64_t len : b.len) b.total += len;
  return b;
}

inline uint64_t Kvquant2BitBodyBytes(const KvGeometry& g) {
  return 2 * Kvquant2BitBlobLayout(g).total;
}

}  // namespace kvs::format
