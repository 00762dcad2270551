// topk_prune_50 and cascade_prune50_int4 (CODECS.md §2.11, §2.12): token pruning by key norm.
//
// Selection (both codecs): k = max(1, ⌊S/2⌋). score[s] = mean over (l, h) of ‖K[l,h,s,:]‖₂ in
// fp32, computed as the reference's NumPy does (squares summed in NumPy's pairwise order, sqrt,
// summed over (l, h) in order, divided by L·H), so the same tokens win. Positions {0, 1, S-2, S-1}
// (those < S, without duplicates: S < 4 has fewer) are always kept; if k is at most their count
// the first k of them, ascending, are the selection (S = 1 keeps token 0). The remaining k - 4
// come from the other positions by descending score. Deviation: the reference's unstable argsort
// breaks ties arbitrarily; here ties go to the lower position and a NaN score ranks above every
// number (NumPy sorts NaN last, so its argsort tail picks NaN first).
// topk_prune_50 sends the kept K and V rows bit-exactly; cascade_prune50_int4 quantises the kept
// [L,H,k,D] tensors with grouped INT4 (kernels/cpu/int4_group.h). Decoders scatter the kept rows
// into place and zero-fill evicted positions. kvshuttle's default (PruneFill::kMask) also reports
// evicted positions in keep_mask; PruneFill::kZero sets the payload flag kFlagPruneZeroFill and the
// decoder then leaves keep_mask all ones, as the reference (CODECS.md §0). Layout and sizes:
// kernels/format/prune.h.
//
// Paths: the reference gathers / scatters whole tensors on one thread; the fast path computes the
// scores with AVX2/F16C (same summation order, so the same bits) and moves rows in parallel over
// (layer, head) slices, or, for cascade, over chunks of about 16K kept values that hold whole INT4
// groups, each quantised from a per-thread buffer that stays in cache.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/half/half.h"
#include "common/status/status.h"
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/codecs.h"
#include "kernels/cpu/int4_group.h"
#include "kernels/format/prune.h"

namespace kvs {
namespace {

constexpr CodecInfo kTopkInfo{CodecId::kTopkPrune50, "topk_prune_50", "pruning",
                              "keep the half of the tokens with the largest mean key norm",
                              /*lossy=*/true, /*exact_size=*/true, /*prunes=*/true};
constexpr CodecInfo kCascadeInfo{CodecId::kCascadePrune50Int4, "cascade_prune50_int4", "hybrid",
                                 "top-k token pruning, then grouped INT4 of the kept tokens",
                                 /*lossy=*/true, /*exact_size=*/true, /*prunes=*/true};

// ---- Token scores ---------------------------------------------------------------------------

// Σ x² of n <= 128 fp16 values in NumPy's pairwise_sum order: below 8 values sequentially from 0;
// otherwise 8 interleaved partial sums r[j] (started at x[j]², then r[j] += x[i+j]²), combined
// as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the n % 8 tail added in order.
float SumSqBlockScalar(const uint16_t* x, int64_t n) {
  auto sq = [x](int64_t i) {
    const float v = HalfToFloat(x[i]);
    return v * v;
  };
  if (n < 8) {
    float res = 0.0f;
    for (int64_t i = 0; i < n; ++i) res += sq(i);
    return res;
  }
  float r[8];
  for (int j = 0; j < 8; ++j) r[j] = sq(j);
  int64_t i = 8;
  for (; i < n - n % 8; i += 8) {
    for (int j = 0; j < 8; ++j) r[j] += sq(i + j);
  }
  float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) res += sq(i);
  return res;
}

// The same sums with the 8 partial sums in one AVX register (bit-identical).
__attribute__((target("avx2,f16c"))) float SumSqBlockAvx2(const uint16_t* x, int64_t n) {
  if (n < 8) return SumSqBlockScalar(x, n);
  __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  __m256 r = _mm256_mul_ps(v, v);
  int64_t i = 8;
  for (; i < n - n % 8; i += 8) {
    v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    r = _mm256_add_ps(r, _mm256_mul_ps(v, v));
  }
  // hadd: [r0+r1, r2+r3, r4+r5, r6+r7], then [(r0+r1)+(r2+r3), (r4+r5)+(r6+r7), ...].
  const __m128 pairs = _mm_hadd_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
  const __m128 quads = _mm_hadd_ps(pairs, pairs);
  float res = _mm_cvtss_f32(quads) + _mm_cvtss_f32(_mm_shuffle_ps(quads, quads, 1));
  for (; i < n; ++i) {
    const float f = HalfToFloat(x[i]);
    res += f * f;
  }
  return res;
}

// NumPy's pairwise summation above 128 values: split in halves cut at a multiple of 8.
template <float (*Block)(const uint16_t*, int64_t)>
float SumSq(const uint16_t* x, int64_t n) {
  if (n <= 128) return Block(x, n);
  int64_t half = n / 2;
  half -= half % 8;
  return SumSq<Block>(x, half) + SumSq<Block>(x + half, n - half);
}

// score[s0, s1) = Σ_(l,h) ‖K[l,h,s,:]‖₂ (fp32, (l, h) in order from 0) / (L·H).
template <float (*Block)(const uint16_t*, int64_t)>
void ScoreTokens(const KvTensorView& k, int64_t s0, int64_t s1, float* score) {
  const KvGeometry& g = k.geom;
  std::fill(score + s0, score + s1, 0.0f);
  for (int64_t lh = 0; lh < g.layers * g.heads; ++lh) {
    const uint16_t* slice = k.data + lh * g.slice_elements();
    for (int64_t s = s0; s < s1; ++s) {
      score[s] += std::sqrt(SumSq<Block>(slice + s * g.head_dim, g.head_dim));
    }
  }
  const float count = static_cast<float>(g.layers * g.heads);
  for (int64_t s = s0; s < s1; ++s) score[s] /= count;
}

// ---- Selection -------------------------------------------------------------------------------

// Writes the k kept positions, ascending, to kept[0, k). order: S entries of scratch.
void SelectTokens(const float* score, int64_t S, int64_t k, uint32_t* kept, uint32_t* order) {
  if (k >= S) {  // S = 1
    std::iota(kept, kept + S, 0u);
    return;
  }
  // Protected positions {0, 1, S-2, S-1} ∩ [0, S) without duplicates: ascending in this order
  // for every S (S = 2 gives {0, 1}, S = 3 gives {0, 1, 2}).
  uint32_t prot[4];
  int n_prot = 0;
  for (int64_t p : {int64_t{0}, int64_t{1}, S - 2, S - 1}) {
    if (p >= 0 && p < S && std::find(prot, prot + n_prot, p) == prot + n_prot) {
      prot[n_prot++] = static_cast<uint32_t>(p);
    }
  }
  if (k <= n_prot) {
    std::copy(prot, prot + k, kept);
    return;
  }
  // Here S >= 10: protected = {0, 1, S-2, S-1}, candidates = [2, S-2).
  const int64_t budget = k - n_prot, n_cand = S - 4;
  std::iota(order, order + n_cand, 2u);
  auto above = [score](uint32_t a, uint32_t b) {
    const float sa = score[a], sb = score[b];
    const bool na = std::isnan(sa), nb = std::isnan(sb);
    if (na != nb) return na;
    if (!na && sa != sb) return sa > sb;
    return a < b;
  };
  std::nth_element(order, order + budget, order + n_cand, above);
  std::copy(prot, prot + n_prot, kept);
  std::copy(order, order + budget, kept + n_prot);
  std::sort(kept, kept + k);
}

// ---- Row movement ----------------------------------------------------------------------------

// Copies kept rows j of every (layer, head) slice of `src` into dst = [L,H,k,D] for the flattened
// kept rows [r0, r1) (row r = lh·k + j).
void GatherRows(const KvTensorView& src, const uint32_t* kept, int64_t k, int64_t r0, int64_t r1,
                uint8_t* dst) {
  const int64_t D = src.geom.head_dim, row_bytes = 2 * D;
  constexpr int64_t kAhead = 8;  // rows; kept rows are scattered, so help the prefetcher
  for (int64_t r = r0; r < r1; ++r) {
    if (r + kAhead < r1) {
      const char* next = reinterpret_cast<const char*>(src.slice(0, (r + kAhead) / k) +
                                                       kept[(r + kAhead) % k] * D);
      for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(next + b);
    }
    const uint16_t* from = src.slice(0, r / k) + kept[r % k] * D;
    std::memcpy(dst + (r - r0) * row_bytes, from, row_bytes);
  }
}

// Writes kept row j of one output slice to its position kept[j] and zero-fills the evicted rows
// between kept[j-1] and kept[j] (and after kept[k-1] for the last row): over j = 0..k-1 every row
// of the slice is written exactly once.
void PlaceRow(uint16_t* slice, const void* row, const uint32_t* kept, int64_t j, int64_t k,
              int64_t S, int64_t D) {
  const int64_t prev = j == 0 ? 0 : kept[j - 1] + 1;
  std::memset(slice + prev * D, 0, (kept[j] - prev) * D * 2);
  std::memcpy(slice + kept[j] * D, row, D * 2);
  if (j == k - 1) std::memset(slice + (kept[j] + 1) * D, 0, (S - kept[j] - 1) * D * 2);
}

// ---- Codecs ----------------------------------------------------------------------------------

class PruneCodec : public CodecBase {
 public:
  using CodecBase::CodecBase;

 protected:
  uint8_t EncodeFlags() const override {
    return options().prune_fill == PruneFill::kZero ? kFlagPruneZeroFill : 0;
  }
  // score + order + kept.
  static size_t SelectionBytes(const KvGeometry& g) {
    return 2 * AlignedBytes(4 * g.tokens) + AlignedBytes(4 * format::PruneKeepCount(g));
  }

  // Scores K, selects the kept positions into kept[0, k) and writes them to idx (the body's
  // index section).
  void Select(const KvTensorView& k, WorkspaceArena& arena, uint32_t* kept, uint8_t* idx,
              ThreadPool* pool) const {
    const KvGeometry& g = k.geom;
    float* score = arena.Take<float>(g.tokens);
    uint32_t* order = arena.Take<uint32_t>(g.tokens);
    if (options().path == CodecPath::kReference) {
      ScoreTokens<SumSqBlockScalar>(k, 0, g.tokens, score);
    } else {
      ParallelFor(
          pool, g.tokens,
          [&](int64_t b, int64_t e) {
            if (HasAvx2F16c()) {
              ScoreTokens<SumSqBlockAvx2>(k, b, e, score);
            } else {
              ScoreTokens<SumSqBlockScalar>(k, b, e, score);
            }
          },
          64);
    }
    const int64_t keep = format::PruneKeepCount(g);
    SelectTokens(score, g.tokens, keep, kept, order);
    for (int64_t j = 0; j < keep; ++j) StoreU32(idx + 4 * j, kept[j]);
  }

  // Reads the index section into kept[0, k): every position < S, strictly ascending. Then marks
  // evicted positions in keep_mask unless the payload asks for zero-fill semantics.
  absl::Status ReadIndices(const uint8_t* idx, uint8_t flags, const KvGeometry& g, uint32_t* kept,
                           absl::Span<uint8_t> keep_mask) const {
    if (flags & ~kFlagPruneZeroFill) {
      return absl::InvalidArgumentError(
          absl::StrCat(name(), ": unknown header flags 0x", absl::Hex(flags)));
    }
    const int64_t keep = format::PruneKeepCount(g);
    for (int64_t j = 0; j < keep; ++j) {
      kept[j] = LoadU32(idx + 4 * j);
      if (kept[j] >= g.tokens || (j > 0 && kept[j] <= kept[j - 1])) {
        return absl::InvalidArgumentError(absl::StrCat(
            name(), ": kept position ", j, " is ", kept[j],
            "; positions must be strictly ascending and below S = ", g.tokens));
      }
    }
    if (!keep_mask.empty() && !(flags & kFlagPruneZeroFill)) {
      std::fill(keep_mask.begin(), keep_mask.end(), uint8_t{0});
      for (int64_t j = 0; j < keep; ++j) keep_mask[kept[j]] = 1;
    }
    return absl::OkStatus();
  }
};

class TopkPruneCodec final : public PruneCodec {
 public:
  explicit TopkPruneCodec(const CodecOptions& o) : PruneCodec(kTopkInfo, o) {}

  size_t WorkspaceBytes(const KvGeometry& g, const ThreadPool*) const override {
    return kWorkspaceSlack + SelectionBytes(g);
  }

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::TopkPruneBodyBytes(g);
  }

  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t> workspace,
                                    ThreadPool* pool) const override {
    const KvGeometry& g = kv.geom();
    const int64_t keep = format::PruneKeepCount(g);
    const int64_t rows = g.layers * g.heads * keep, row_bytes = 2 * g.head_dim;
    WorkspaceArena arena(workspace);
    uint32_t* kept = arena.Take<uint32_t>(keep);
    Select(kv.k, arena, kept, body.data() + 2 * rows * row_bytes, pool);
    uint8_t* k_out = body.data();
    uint8_t* v_out = body.data() + rows * row_bytes;
    if (options().path == CodecPath::kReference) {
      GatherRows(kv.k, kept, keep, 0, rows, k_out);
      GatherRows(kv.v, kept, keep, 0, rows, v_out);
    } else {
      // Both tensors, in parallel over (tensor, layer, head) slices.
      ParallelFor(pool, 2 * g.layers * g.heads, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          const int64_t lh = t % (g.layers * g.heads);
          const bool is_v = t >= g.layers * g.heads;
          GatherRows(is_v ? kv.v : kv.k, kept, keep, lh * keep, (lh + 1) * keep,
                     (is_v ? v_out : k_out) + lh * keep * row_bytes);
        }
      });
    }
    return format::TopkPruneBodyBytes(g);
  }

  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t flags,
                          const MutableKvCacheView& out, absl::Span<uint8_t> workspace,
                          ThreadPool* pool, absl::Span<uint8_t> keep_mask) const override {
    const KvGeometry& g = out.geom();
    const int64_t S = g.tokens, D = g.head_dim, keep = format::PruneKeepCount(g);
    const int64_t slices = g.layers * g.heads, row_bytes = 2 * D;
    const uint8_t* k_in = body.data();
    const uint8_t* v_in = body.data() + slices * keep * row_bytes;
    WorkspaceArena arena(workspace);
    uint32_t* kept = arena.Take<uint32_t>(keep);
    KVS_RETURN_IF_ERROR(ReadIndices(v_in + slices * keep * row_bytes, flags, g, kept, keep_mask));
    if (options().path == CodecPath::kReference) {
      for (const MutableKvTensorView* t : {&out.k, &out.v}) {
        std::fill(t->data, t->data + g.elements(), uint16_t{0});
        const uint8_t* in = t == &out.k ? k_in : v_in;
        for (int64_t lh = 0; lh < slices; ++lh) {
          for (int64_t j = 0; j < keep; ++j) {
            std::memcpy(t->slice(0, lh) + kept[j] * D, in + (lh * keep + j) * row_bytes,
                        row_bytes);
          }
        }
      }
      return absl::OkStatus();
    }
    ParallelFor(pool, 2 * slices, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t lh = t % slices;
        const bool is_v = t >= slices;
        uint16_t* slice = (is_v ? out.v : out.k).slice(0, lh);
        const uint8_t* in = (is_v ? v_in : k_in) + lh * keep * row_bytes;
        for (int64_t j = 0; j < keep; ++j) PlaceRow(slice, in + j * row_bytes, kept, j, keep, S, D);
      }
    });
    return absl::OkStatus();
  }
};

class CascadeCodec final : public PruneCodec {
 public:
  explicit CascadeCodec(const CodecOptions& o) : PruneCodec(kCascadeInfo, o) {}

  size_t WorkspaceBytes(const KvGeometry& g, const ThreadPool* pool) const override {
    return kWorkspaceSlack + SelectionBytes(g) + AlignedBytes(2 * BufferValues(g)) * Slots(pool);
  }

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::CascadePruneInt4BodyBytes(g);
  }

  // Kept rows per chunk of the fast path: about 16K values and a whole number of INT4 groups
  // (rows·D a multiple of 128), so that chunks quantise independently.
  static int64_t ChunkRows(int64_t D) {
    const int64_t unit = int4g::kGroup / std::gcd(D, int4g::kGroup);
    return unit * std::max<int64_t>(1, 16384 / (unit * D));
  }
  // fp16 values of one staging buffer: the whole kept tensor (reference) or one chunk (fast).
  int64_t BufferValues(const KvGeometry& g) const {
    return options().path == CodecPath::kReference
               ? static_cast<int64_t>(format::PruneKeptElements(g))
               : ChunkRows(g.head_dim) * g.head_dim;
  }
  int Slots(const ThreadPool* pool) const {
    return options().path == CodecPath::kReference ? 1 : PoolThreads(pool);
  }

  // Runs fn(tensor, r0, r1, buffer) over chunks of the kept rows of K (tensor 0) and V (1): one
  // chunk of all rows on the reference path, ChunkRows() chunks split over the pool's threads on
  // the fast path, each thread with its own staging buffer.
  template <typename Fn>
  void ForChunks(const KvGeometry& g, WorkspaceArena& arena, ThreadPool* pool, Fn fn) const {
    const int64_t rows = g.layers * g.heads * format::PruneKeepCount(g);
    const int slots = Slots(pool);
    uint16_t* buffers = arena.Take<uint16_t>(AlignedBytes(2 * BufferValues(g)) / 2 * slots);
    if (options().path == CodecPath::kReference) {
      for (int tensor = 0; tensor < 2; ++tensor) fn(tensor, 0, rows, buffers);
      return;
    }
    const int64_t step = ChunkRows(g.head_dim), per_tensor = (rows + step - 1) / step;
    const int64_t chunks = 2 * per_tensor, buf_values = AlignedBytes(2 * BufferValues(g)) / 2;
    ParallelFor(pool, slots, [&](int64_t b, int64_t e) {
      for (int64_t slot = b; slot < e; ++slot) {
        for (int64_t c = chunks * slot / slots; c < chunks * (slot + 1) / slots; ++c) {
          const int64_t r0 = (c % per_tensor) * step;
          fn(static_cast<int>(c / per_tensor), r0, std::min(rows, r0 + step),
             buffers + slot * buf_values);
        }
      }
    });
  }

  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t> workspace,
                                    ThreadPool* pool) const override {
    const KvGeometry& g = kv.geom();
    const format::CascadeSections sec(g);
    const int64_t keep = format::PruneKeepCount(g), D = g.head_dim;
    uint8_t* b = body.data();
    WorkspaceArena arena(workspace);
    uint32_t* kept = arena.Take<uint32_t>(keep);
    Select(kv.k, arena, kept, b + sec.indices(), pool);
    ForChunks(g, arena, pool, [&](int tensor, int64_t r0, int64_t r1, uint16_t* buf) {
      GatherRows(tensor == 0 ? kv.k : kv.v, kept, keep, r0, r1, reinterpret_cast<uint8_t*>(buf));
      const int64_t v0 = r0 * D, group0 = v0 / int4g::kGroup;
      int4g::EncodeF16(buf, (r1 - r0) * D,
                       b + (tensor == 0 ? sec.k_packed() : sec.v_packed()) + v0 / 2,
                       b + (tensor == 0 ? sec.k_scales() : sec.v_scales()) + 4 * group0,
                       b + (tensor == 0 ? sec.k_zeros() : sec.v_zeros()) + 4 * group0,
                       options().path, nullptr);
    });
    return sec.body();
  }

  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t flags,
                          const MutableKvCacheView& out, absl::Span<uint8_t> workspace,
                          ThreadPool* pool, absl::Span<uint8_t> keep_mask) const override {
    const KvGeometry& g = out.geom();
    const format::CascadeSections sec(g);
    const int64_t S = g.tokens, D = g.head_dim, keep = format::PruneKeepCount(g);
    const uint8_t* b = body.data();
    WorkspaceArena arena(workspace);
    uint32_t* kept = arena.Take<uint32_t>(keep);
    KVS_RETURN_IF_ERROR(ReadIndices(b + sec.indices(), flags, g, kept, keep_mask));
    const bool reference = options().path == CodecPath::kReference;
    ForChunks(g, arena, pool, [&](int tensor, int64_t r0, int64_t r1, uint16_t* buf) {
      const int64_t v0 = r0 * D, group0 = v0 / int4g::kGroup;
      int4g::DecodeF16(b + (tensor == 0 ? sec.k_packed() : sec.v_packed()) + v0 / 2,
                       b + (tensor == 0 ? sec.k_scales() : sec.v_scales()) + 4 * group0,
                       b + (tensor == 0 ? sec.k_zeros() : sec.v_zeros()) + 4 * group0,
                       (r1 - r0) * D, buf, options().path, nullptr);
      const MutableKvTensorView& t = tensor == 0 ? out.k : out.v;
      if (reference) {
        std::fill(t.data, t.data + g.elements(), uint16_t{0});
        for (int64_t r = r0; r < r1; ++r) {
          std::memcpy(t.slice(0, r / keep) + kept[r % keep] * D, buf + (r - r0) * D, 2 * D);
        }
        return;
      }
      for (int64_t r = r0; r < r1; ++r) {
        PlaceRow(t.slice(0, r / keep), buf + (r - r0) * D, kept, r % keep, keep, S, D);
      }
    });
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewTopkPrune50Codec(const CodecOptions& o) {
  return std::make_unique<TopkPruneCodec>(o);
}
std::unique_ptr<Codec> NewCascadePrune50Int4Codec(const CodecOptions& o) {
  return std::make_unique<CascadeCodec>(o);
}

}  // namespace kvs
