// kernels/format/cachegen.h — the cachegen payload body (CODECS.md §2.9), byte for byte the
// KVShuttle reference's `data` (its JSON metadata holds nothing that the geometry does not give).
//
// body = one record per (layer, head) slice of K, in l-major order, then the same for V. Tokens
// are cut into C = ⌈S/10⌉ chunks of 10 (the last may be shorter). One record, little-endian, no
// alignment padding:
//   u32 anchor_bytes = C·D, u32 delta_bytes = ⌈(S − C)·D/2⌉, u32 param_floats = 4·C
//   anchors   u8 [C, D]     each chunk's first token, 8-bit asymmetric over its D values
//   deltas    delta_bytes   4-bit codes of (token − anchor) for the chunks' other tokens, in
//                           chunk → token → channel order, high nibble first, zero-padded at the
//                           end of the record's stream only
//   params    f32 [C, 4]    (anchor scale, anchor zero, delta scale, delta zero) per chunk
// A decoder requires exactly these header values. record bytes = 12 + C·D + ⌈(S − C)·D/2⌉ + 16·C;
// body bytes = 2·L·H·record bytes (ratio 3.553 at S=1024, D=128).
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"

namespace kvs::format {

inline constexpr int kCachegenChunk = 10;
inline constexpr int kCachegenAnchorQmax = 255;
inline constexpr int kCachegenDeltaQmax = 15;

struct CachegenRecord {
  uint64_t anchor_bytes, delta_bytes, param_floats;  // the record header's three fields
  uint64_t total;                                    // record bytes, header included
};

inline int64_t CachegenChunks(int64_t tokens) {
  return (tokens + kCachegenChunk - 1) / kCachegenChunk;
}

inline CachegenRecord CachegenRecordLayout(const KvGeometry& g) {
  const uint64_t C = static_cast<uint64_t>(CachegenChunks(g.tokens));
  const uint64_t D = static_cast<uint64_t>(g.head_dim);
  CachegenRecord r;
  r.anchor_bytes = C * D;
  r.delta_bytes = ((static_cast<uint64_t>(g.tokens) - C) * D + 1) / 2;
  r.param_floats = 4 * C;
  r.total = 12 + r.anchor_bytes + r.delta_bytes + 4 * r.param_floats;
  return r;
}

inline uint64_t CachegenBodyBytes(const KvGeometry& g) {
  return 2 * static_cast<uint64_t>(g.layers * g.heads) * CachegenRecordLayout(g).total;
}

}  // namespace kvs::format
