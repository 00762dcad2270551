// kernels/format/prune.h — topk_prune_50 and cascade_prune50_int4 payload bodies
// (CODECS.md §2.11, §2.12).
//
// Both codecs keep k = max(1, ⌊S/2⌋) token positions, one set shared by every layer and head.
// `idx` = the kept positions as u32 × k, strictly ascending, each < S (a decoder rejects anything
// else). Sections follow each other with no padding, little-endian, unaligned.
//
// topk_prune_50 (n = L·H·k·D kept elements per tensor):
//   K_kept fp16 [L,H,k,D] ‖ V_kept fp16 [L,H,k,D] ‖ idx
//   body bytes = 4·n + 4·k                                   (ratio ≈ 2.0)
// cascade_prune50_int4: grouped INT4 (CODECS.md §2.6: groups of 128 consecutive values of the
// flattened kept tensor, zero-padded at the end; G = ⌈n/128⌉) of the kept K and of the kept V:
//   Kpacked u8[64·G] ‖ Vpacked u8[64·G] ‖ Kscales f32[G] ‖ Vscales ‖ Kzeros f32[G] ‖ Vzeros ‖ idx
//   body bytes = 2·(64·G + 8·G) + 4·k                        (ratio 7.110 at S = 220, D = 128)
//
// Header flag kFlagPruneZeroFill (kernels/format/payload.h): set by an encoder configured with
// PruneFill::kZero. Evicted positions decode as zeros either way; without the flag the decoder
// also reports them as evicted (keep_mask = 0), with it the keep_mask stays all ones (the
// reference's zero-fill semantics).
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"

namespace kvs::format {

// k = max(1, ⌊S · 0.5⌋).
inline int64_t PruneKeepCount(const KvGeometry& g) { return g.tokens / 2 > 0 ? g.tokens / 2 : 1; }
// Kept elements per tensor, n = L·H·k·D.
inline uint64_t PruneKeptElements(const KvGeometry& g) {
  return static_cast<uint64_t>(g.layers * g.heads * PruneKeepCount(g) * g.head_dim);
}

inline uint64_t TopkPruneBodyBytes(const KvGeometry& g) {
  return 4 * PruneKeptElements(g) + 4 * static_cast<uint64_t>(PruneKeepCount(g));
}

// Byte offsets of the cascade_prune50_int4 sections.
struct CascadeSections {
  explicit CascadeSections(const KvGeometry& g)
      : groups((PruneKeptElements(g) + 127) / 128), keep(PruneKeepCount(g)) {}
  uint64_t groups;  // G
  uint64_t keep;    // k
  uint64_t packed() const { return 64 * groups; }
  uint64_t k_packed() const { return 0; }
  uint64_t v_packed() const { return packed(); }
  uint64_t k_scales() const { return 2 * packed(); }
  uint64_t v_scales() const { return 2 * packed() + 4 * groups; }
  uint64_t k_zeros() const { return 2 * packed() + 8 * groups; }
  uint64_t v_zeros() const { return 2 * packed() + 12 * groups; }
  uint64_t indices() const { return 2 * packed() + 16 * groups; }
  uint64_t body() const { return indices() + 4 * keep; }
};

inline uint64_t CascadePruneInt4BodyBytes(const KvGeometry& g) { return CascadeSections(g).body(); }

}  // namespace kvs::format
