// kernels/cuda/token_select.cuh — internal: the token pruning shared by topk_prune_50 and
// cascade_prune50_int4 on the GPU (CODECS.md §2.11–2.12, kernels/cpu/prune.cc).
//
// Selection, k = max(1, ⌊S/2⌋):
//   norms  one thread per key row, the row staged in shared memory: ‖K[l,h,s,:]‖₂ with the sum
//          of squares in NumPy's pairwise order (qm::PairwiseSumSq) — the CPU's bits
//   score  one thread per token: Σ over (l, h) in order, / (L·H) — the CPU's order, so the CPU's
//          bits, so the same tokens win
//   select one block: positions {0, 1, S-2, S-1} always; the other k - 4 by a radix select of the
//          top score keys (qm::ScoreKey: NaN above every number), ties to the lower position;
//          the kept list, ascending, written straight into the payload's index section.
// Decode side: the positions are checked on the device (strictly ascending, below S: otherwise
// kErrPositions, and nothing is written out of bounds) and turned into a map s -> j + 1 (0 for
// an evicted position).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/tensor/kv.h"
#include "kernels/cuda/codec_frame.cuh"

namespace kvs::cuda {

// Workspace regions of the selection (norms [L·H·S] f32, score [S] f32).
struct SelectWorkspace {
  explicit SelectWorkspace(const KvGeometry& g, WorkspaceLayout& layout)
      : norms(layout.Take(4 * g.layers * g.heads * g.tokens)), score(layout.Take(4 * g.tokens)) {}
  size_t norms, score;
};

// Writes the k kept positions of K (fp16 [L,H,S,D] on the device) to idx (u32 × k, 4-aligned).
absl::Status LaunchSelectTokens(const uint16_t* k, const KvGeometry& g, uint8_t* ws,
                                const SelectWorkspace& w, uint32_t* idx, cudaStream_t stream);

// Checks the k positions at idx and fills pos[s] = j + 1 for kept position s = idx[j]; pos (S
// int32) must be zero before. Errors go to the status word.
absl::Status LaunchCheckPositions(const uint32_t* idx, const KvGeometry& g, int32_t* pos,
                                  uint32_t* status, cudaStream_t stream);

// Writes the evicted rows of both output tensors as zeros and, with `kept` (the payload's kept
// rows, fp16 [L,H,k,D] for K then V), copies the kept rows into place; sets keep_mask (when
// non-null) to 1 for kept positions and 0 for evicted ones, or to all ones when the payload header
// at `payload` has kFlagPruneZeroFill.
absl::Status LaunchPlaceRows(const int32_t* pos, const uint16_t* kept, const uint8_t* payload,
                             const KvGeometry& g, uint16_t* out_k, uint16_t* out_v,
                             uint8_t* keep_mask, cudaStream_t stream);

}  // namespace kvs::cuda
