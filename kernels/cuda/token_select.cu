// Token selection and placement for the pruning codecs on the GPU; see token_select.cuh.
#include "kernels/cuda/token_select.cuh"

#include "kernels/cuda/device_common.cuh"
#include "kernels/format/payload.h"
#include "kernels/format/prune.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kScoreThreads = 64;  // small blocks spread the S per-token sums over more SMs
constexpr int kSelectThreads = 1024;

// Rows per block of the norm kernel: a power of two with rows·D <= 16384 (<= 256 rows).
int NormRows(int64_t D) {
  int r = 256;
  while (r > 32 && r * D > 16384) r /= 2;
  return r;
}

// One thread per row; rows staged as 32-bit words with an odd word stride (no bank conflicts).
__global__ void NormsKernel(const uint16_t* k, int64_t rows, int D, float* norms) {
  extern __shared__ uint32_t words[];
  const int stride = D / 2 + 1, vecs = D / kVec;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * blockDim.x;
  const int64_t nrows = min(static_cast<int64_t>(blockDim.x), rows - row0);
  for (int64_t i = threadIdx.x; i < nrows * vecs; i += blockDim.x) {
    const uint4 v = Load16(k + row0 * D + i * kVec);
    uint32_t* w = words + (i / vecs) * stride + (i % vecs) * 4;
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  }
  __syncthreads();
  if (threadIdx.x < nrows) {
    const uint16_t* x = reinterpret_cast<const uint16_t*>(words + threadIdx.x * stride);
    norms[row0 + threadIdx.x] = __fsqrt_rn(qm::PairwiseSumSq(x, D));
  }
}

// score[s] = Σ_(l,h) norms[lh][s] in (l, h) order, / (L·H). The adds are a chain; the loads are
// not, and 16 of them are in flight per thread.
__global__ void __launch_bounds__(kScoreThreads) ScoreKernel(const float* norms, int64_t slices,
                                                             int64_t S, float* score) {
  const int64_t s = static_cast<int64_t>(blockIdx.x) * kScoreThreads + threadIdx.x;
  if (s >= S) return;
  float acc = 0.0f;
#pragma unroll 16
  for (int64_t lh = 0; lh < slices; ++lh) acc = qm::Add(acc, norms[lh * S + s]);
  score[s] = qm::Div(acc, static_cast<float>(slices));
}

// Exclusive prefix sum over the block (blockDim.x = kSelectThreads); *total = the block's sum.
__device__ uint32_t BlockExclusiveScan(uint32_t v, uint32_t* total) {
  __shared__ uint32_t warp_sums[kSelectThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint32_t inc = v;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const uint32_t n = __shfl_up_sync(0xFFFFFFFFu, inc, o);
    if (lane >= o) inc += n;
  }
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    const uint32_t w = warp_sums[lane];
    uint32_t winc = w;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const uint32_t n = __shfl_up_sync(0xFFFFFFFFu, winc, o);
      if (lane >= o) winc += n;
    }
    warp_sums[lane] = winc - w;  // exclusive over warps
    if (lane == 31) *total = winc;
  }
  __syncthreads();
  const uint32_t before = warp_sums[warp] + inc - v;
  __syncthreads();  // warp_sums is reused by the next call
  return before;
}

__device__ __forceinline__ bool Protected(int64_t s, int64_t S) {
  return s == 0 || s == 1 || s == S - 2 || s == S - 1;
}

__global__ void __launch_bounds__(kSelectThreads) SelectKernel(const float* score, int64_t S,
                                                               int64_t keep, uint32_t* idx) {
  __shared__ uint32_t hist[256];
  __shared__ uint32_t prefix_s, remaining_s, total_s;
  if (S < 10) {  // k <= 4: the first k protected positions (all of them for S = 1)
    if (threadIdx.x == 0) {
      int64_t n = 0;
      for (int64_t s = 0; s < S && n < keep; ++s) {
        if (Protected(s, S) || keep >= S) idx[n++] = static_cast<uint32_t>(s);
      }
    }
    return;
  }
  // Radix select, 8 bits at a time from the top, of the budget-th largest score key among the
  // candidates [2, S - 2); `remaining` ends as how many candidates equal to it are taken.
  const uint32_t budget = static_cast<uint32_t>(keep - 4);
  uint32_t prefix = 0, mask = 0, remaining = budget;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kSelectThreads) hist[i] = 0;
    __syncthreads();
    for (int64_t s = 2 + threadIdx.x; s < S - 2; s += kSelectThreads) {
      const uint32_t key = qm::ScoreKey(score[s]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xFFu], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t above = 0;
      int d = 255;
      for (; d > 0 && above + hist[d] < remaining; --d) above += hist[d];
      prefix_s = prefix | static_cast<uint32_t>(d) << shift;
      remaining_s = remaining - above;
    }
    __syncthreads();
    prefix = prefix_s;
    remaining = remaining_s;
    mask |= 0xFFu << shift;
    __syncthreads();
  }
  // Kept positions in ascending order: protected, keys above the threshold, and the first
  // `remaining` candidates equal to it.
  uint32_t eq_seen = 0, kept = 0;
  for (int64_t base = 0; base < S; base += kSelectThreads) {
    const int64_t s = base + threadIdx.x;
    const bool cand = s >= 2 && s < S - 2;
    const uint32_t key = cand ? qm::ScoreKey(score[s]) : 0;
    const uint32_t eq = cand && key == prefix;
    const uint32_t eq_before = eq_seen + BlockExclusiveScan(eq, &total_s);
    eq_seen += total_s;
    const uint32_t sel = s < S && (Protected(s, S) || (cand && key > prefix) ||
                                   (eq && eq_before < remaining));
    const uint32_t at = kept + BlockExclusiveScan(sel, &total_s);
    kept += total_s;
    if (sel) idx[at] = static_cast<uint32_t>(s);
  }
}

__global__ void __launch_bounds__(kThreads) CheckPositionsKernel(const uint32_t* idx,
                                                                 int64_t keep, int64_t S,
                                                                 int32_t* pos, uint32_t* status) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= keep) return;
  const uint32_t s = idx[j];
  if (s >= S || (j > 0 && idx[j - 1] >= s)) atomicOr(status, kErrPositions);
  if (s < S) pos[s] = static_cast<int32_t>(j + 1);
}

struct PlaceShape {
  int64_t S, slices, keep, vecs, D, vectors;  // vectors = 2·L·H·S·D/8
};

__global__ void __launch_bounds__(kThreads) PlaceRowsKernel(const int32_t* pos,
                                                            const uint16_t* kept,
                                                            const uint8_t* payload, PlaceShape p,
                                                            uint16_t* out_k, uint16_t* out_v,
                                                            uint8_t* keep_mask) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= p.vectors) return;
  const int64_t row = Div64(i, p.vecs), v = i - row * p.vecs;
  const int64_t slice = Div64(row, p.S), s = row - slice * p.S;  // slice over K then V
  const int32_t j = pos[s];
  if (keep_mask != nullptr && slice == 0 && v == 0) {
    keep_mask[s] = (payload[7] & kFlagPruneZeroFill) || j != 0;
  }
  const bool is_v = slice >= p.slices;
  uint16_t* y = (is_v ? out_v : out_k) + ((slice - (is_v ? p.slices : 0)) * p.S + s) * p.D + v * kVec;
  if (j == 0) {
    Store16(y, make_uint4(0, 0, 0, 0));
  } else if (kept != nullptr) {
    Store16(y, Load16(kept + (slice * p.keep + (j - 1)) * p.D + v * kVec));
  }
}

}  // namespace

absl::Status LaunchSelectTokens(const uint16_t* k, const KvGeometry& g, uint8_t* ws,
                                const SelectWorkspace& w, uint32_t* idx, cudaStream_t stream) {
  const int64_t rows = g.layers * g.heads * g.tokens;
  const int D = static_cast<int>(g.head_dim);
  const int per_block = NormRows(D);
  float* norms = reinterpret_cast<float*>(ws + w.norms);
  float* score = reinterpret_cast<float*>(ws + w.score);
  NormsKernel<<<BlocksFor(rows, per_block), per_block, per_block * (D / 2 + 1) * 4, stream>>>(
      k, rows, D, norms);
  ScoreKernel<<<BlocksFor(g.tokens, kScoreThreads), kScoreThreads, 0, stream>>>(
      norms, g.layers * g.heads, g.tokens, score);
  SelectKernel<<<1, kSelectThreads, 0, stream>>>(score, g.tokens, format::PruneKeepCount(g), idx);
  return LaunchStatus("top-k token selection");
}

absl::Status LaunchCheckPositions(const uint32_t* idx, const KvGeometry& g, int32_t* pos,
                                  uint32_t* status, cudaStream_t stream) {
  const int64_t keep = format::PruneKeepCount(g);
  CheckPositionsKernel<<<BlocksFor(keep, kThreads), kThreads, 0, stream>>>(idx, keep, g.tokens,
                                                                           pos, status);
  return LaunchStatus("kept position check");
}

absl::Status LaunchPlaceRows(const int32_t* pos, const uint16_t* kept, const uint8_t* payload,
                             const KvGeometry& g, uint16_t* out_k, uint16_t* out_v,
                             uint8_t* keep_mask, cudaStream_t stream) {
  PlaceShape p;
  p.S = g.tokens;
  p.slices = g.layers * g.heads;
  p.keep = format::PruneKeepCount(g);
  p.D = g.head_dim;
  p.vecs = g.head_dim / kVec;
  p.vectors = 2 * p.slices * p.S * p.vecs;
  PlaceRowsKernel<<<BlocksFor(p.vectors, kThreads), kThreads, 0, stream>>>(pos, kept, payload, p,
                                                                           out_k, out_v, keep_mask);
  return LaunchStatus("pruned row placement");
}

}  // namespace kvs::cuda
