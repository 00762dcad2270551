// kvquant_2bit (CODECS.md §2.8): the KVShuttle reference's "KVQuant-inspired" codec — per
// tensor, n_out = max(1, ⌊D·1%⌋) outlier channels kept in fp16 and the other channels quantised
// to asymmetric 2-bit with one (scale, zero) per layer. K and V are encoded independently.
//
// Per tensor:
//   1. Channel magnitude = mean |x| over (L, H, S). The sums are formed in a fixed order, so that
//      every path and thread count picks the same channels: per (layer, head) slice over the
//      tokens in order in fp64, then the slices' sums in (layer, head) order (the mean divides
//      every sum by the same count, so the sums are compared). The n_out channels first in the
//      order (sum descending, channel ascending) are the outliers — ties go to the lower channel
//      index, and a sum that is NaN counts as +inf. They are stored in the reverse of that order
//      (ascending magnitude, as the reference's argsort tail).
//   2. Outlier channels: fp16 [L, H, S, n_out], bit-exact.
//   3. Normal channels, ascending: per layer l, min/max over all heads, tokens and normal
//      channels; scale = (max − min)/3 (a zero range counts as 1), zero = min;
//      q = clip(rint((x − zero)/scale), 0, 3) in fp32 with a true division. Decode q·scale + zero
//      in fp32, rounded to fp16.
// Layout and size: kernels/format/kvquant_2bit.h. In streaming mode (a chunk of layers) the
// outlier channels are chosen per chunk.
//
// Deviations from the reference: the tie rule above (numpy's argsort leaves ties unspecified and
// sums in fp32 pairwise order); a zero-point of −0 is stored as +0; with D = 1 (no normal
// channel; the reference fails) the scales are 1/3 and the zeros 0.
//
// Decode validates every section length and both counts against the geometry, and the channel
// sets: indices below D, normal strictly ascending, outliers disjoint from the normal channels
// and from each other (together they then cover all D channels).
//
// Fast path: pass 1 runs over (layer, head) slices in parallel, each keeping per-channel fp64
// |x| sums and min/max in registers over blocks of columns; pass 2 runs over groups of 4 rows
// (a group's codes start and end on whole bytes of the stream), quantising each row's runs of
// normal channels into one code row that is packed at once. Decode mirrors pass 2.
#include "kernels/format/kvquant_2bit.h"

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
#include "kernels/cpu/pack2bit.h"

namespace kvs {
namespace {

constexpr CodecInfo kInfo{CodecId::kKvquant2Bit, "kvquant_2bit", "quantization",
                          "fp16 outlier channels plus per-layer asymmetric 2-bit", /*lossy=*/true,
                          /*exact_size=*/true, /*prunes=*/false};

constexpr float kQmax = format::kKvquant2BitQmax;

// Normal channels [channel, channel + len) are entries [index, index + len) of the normal list.
struct Run {
  uint32_t channel, len, index;
};

// Bump allocator over the workspace (64-byte aligned pieces); on a null base it only measures.
class Carver {
 public:
  explicit Carver(uint8_t* base) : p_(reinterpret_cast<uintptr_t>(base)), base_(p_) {}
  template <typename T>
  T* Take(uint64_t n) {
    p_ = (p_ + 63) & ~uintptr_t{63};
    T* r = reinterpret_cast<T*>(p_);
    p_ += n * sizeof(T);
    return r;
  }
  uint64_t used() const { return p_ - base_ + 63; }  // + the alignment of an unaligned base

 private:
  uintptr_t p_, base_;
};

// Rows per packing group: 4 rows of codes start and end on whole bytes of the code stream.
constexpr int64_t kRowGroup = 4;
uint64_t CodeRowBytes(int64_t D) { return kRowGroup * D + 64; }

// Scratch for one tensor at a time.
struct Workspace {
  double* total;        // [D] channel |x| sums
  uint32_t* order;      // [D] channels by magnitude
  uint8_t* is_normal;   // [D]
  uint32_t* normal;     // [D - n_out] ascending
  uint32_t* outlier;    // [n_out] as stored
  Run* runs;            // [n_out + 1]
  float *scale, *zero;  // [L] per-layer parameters
  double* sum;          // [L·H·D] per-slice |x| sums (fast; [D] for the reference)
  float *mn, *mx;       // [L·H·D] per-slice channel min/max (fast only)
  uint8_t* codes;       // [threads][4·D] a row group's codes per thread (fast only)
};

Workspace Layout(Carver& c, const KvGeometry& g, int threads, bool fast) {
  const int64_t D = g.head_dim, n_out = format::Kvquant2BitOutliers(D);
  const int64_t stats = fast ? g.layers * g.heads * D : 0;
  Workspace w;
  w.total = c.Take<double>(D);
  w.order = c.Take<uint32_t>(D);
  w.is_normal = c.Take<uint8_t>(D);
  w.normal = c.Take<uint32_t>(D - n_out);
  w.outlier = c.Take<uint32_t>(n_out);
  w.runs = c.Take<Run>(n_out + 1);
  w.scale = c.Take<float>(g.layers);
  w.zero = c.Take<float>(g.layers);
  w.sum = c.Take<double>(fast ? stats : D);
  w.mn = c.Take<float>(stats);
  w.mx = c.Take<float>(stats);
  w.codes = c.Take<uint8_t>(fast ? threads * CodeRowBytes(D) : 0);
  return w;
}
uint8_t* ThreadCodes(const Workspace& w, int64_t share, int64_t D) {
  return w.codes + share * CodeRowBytes(D);
}

void Params(float mn, float mx, float* scale, float* zero) {
  float range = mx - mn;
  if (range == 0.0f) range = 1.0f;
  *scale = range / kQmax;
  *zero = mn + 0.0f;  // -0 -> +0
}

int64_t BuildRuns(const uint32_t* normal, int64_t n_normal, Run* runs) {
  int64_t n = 0;
  for (int64_t j = 0; j < n_normal; ++j) {
    if (n > 0 && normal[j] == runs[n - 1].channel + runs[n - 1].len) {
      ++runs[n - 1].len;
    } else {
      runs[n++] = {normal[j], 1, static_cast<uint32_t>(j)};
    }
  }
  return n;
}

// Outliers from w.total (see the banner), then the normal list and its runs.
int64_t SelectChannels(int64_t D, int64_t n_out, const Workspace& w) {
  auto key = [&](uint32_t d) { return std::isnan(w.total[d]) ? HUGE_VAL : w.total[d]; };
  std::iota(w.order, w.order + D, 0u);
  std::partial_sort(w.order, w.order + n_out, w.order + D, [&](uint32_t a, uint32_t b) {
    return key(a) > key(b) || (key(a) == key(b) && a < b);
  });
  std::fill(w.is_normal, w.is_normal + D, uint8_t{1});
  for (int64_t k = 0; k < n_out; ++k) {
    w.outlier[k] = w.order[n_out - 1 - k];
    w.is_normal[w.outlier[k]] = 0;
  }
  int64_t j = 0;
  for (int64_t d = 0; d < D; ++d) {
    if (w.is_normal[d]) w.normal[j++] = static_cast<uint32_t>(d);
  }
  return BuildRuns(w.normal, j, w.runs);
}

// Where the sections of one blob are.
template <typename Byte>
struct Blob {
  Byte *outlier16, *codes, *scales, *zeros;
};

// Writes the blob's header, counts and index lists; returns the data sections.
Blob<uint8_t> WriteBlobHead(uint8_t* blob, const KvGeometry& g, const Workspace& w) {
  const format::Kvquant2BitBlob layout = format::Kvquant2BitBlobLayout(g);
  const int64_t n_out = format::Kvquant2BitOutliers(g.head_dim), n_normal = g.head_dim - n_out;
  uint8_t* p = blob;
  auto put = [&p](uint64_t v) {
    StoreU32(p, static_cast<uint32_t>(v));
    p += 4;
  };
  for (uint64_t len : layout.len) put(len);
  put(n_out);
  put(n_normal);
  for (int64_t k = 0; k < n_out; ++k) put(w.outlier[k]);
  for (int64_t j = 0; j < n_normal; ++j) put(w.normal[j]);
  Blob<uint8_t> b;
  b.outlier16 = p;
  b.codes = b.outlier16 + layout.len[3];
  b.scales = b.codes + layout.len[4];
  b.zeros = b.scales + layout.len[5];
  return b;
}

void StoreLayerParams(const Blob<uint8_t>& b, const KvGeometry& g, const Workspace& w) {
  for (int64_t l = 0; l < g.layers; ++l) {
    StoreF32(b.scales + 4 * l, w.scale[l]);
    StoreF32(b.zeros + 4 * l, w.zero[l]);
  }
}

// ---- Reference path: scalar, straight from the spec. ----

void EncodeTensorReference(const KvTensorView& t, uint8_t* blob, const Workspace& w) {
  const KvGeometry& g = t.geom;
  const int64_t H = g.heads, S = g.tokens, D = g.head_dim;
  const int64_t n_out = format::Kvquant2BitOutliers(D), n_normal = D - n_out;
  std::fill(w.total, w.total + D, 0.0);
  for (int64_t lh = 0; lh < g.layers * H; ++lh) {
    std::fill(w.sum, w.sum + D, 0.0);
    const uint16_t* x = t.data + lh * S * D;
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t d = 0; d < D; ++d) w.sum[d] += std::fabs(HalfToFloat(x[s * D + d]));
    }
    for (int64_t d = 0; d < D; ++d) w.total[d] += w.sum[d];
  }
  SelectChannels(D, n_out, w);

  for (int64_t l = 0; l < g.layers; ++l) {
    float mn = HUGE_VALF, mx = -HUGE_VALF;
    for (int64_t hs = 0; hs < H * S; ++hs) {
      for (int64_t j = 0; j < n_normal; ++j) {
        const float x = HalfToFloat(t.layer(l)[hs * D + w.normal[j]]);
        mn = std::min(mn, x);
        mx = std::max(mx, x);
      }
    }
    if (n_normal == 0) mn = mx = 0.0f;
    Params(mn, mx, &w.scale[l], &w.zero[l]);
  }

  const Blob<uint8_t> b = WriteBlobHead(blob, g, w);
  StoreLayerParams(b, g, w);
  const int64_t rows = g.layers * H * S;
  pack2::ZeroPadding(b.codes, rows * n_normal);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t l = r / (H * S);
    const uint16_t* x = t.data + r * D;
    for (int64_t j = 0; j < n_normal; ++j) {
      pack2::PutOne(
          b.codes, r * n_normal + j,
          pack2::Portable::Quant1(HalfToFloat(x[w.normal[j]]), w.zero[l], w.scale[l], kQmax));
    }
    for (int64_t k = 0; k < n_out; ++k) {
      std::memcpy(b.outlier16 + 2 * (r * n_out + k), &x[w.outlier[k]], 2);
    }
  }
}

// ---- Fast path. ----

// Per-column statistics of a [rows, n] window with row stride `stride`:
// sum[i] = Σ_r |x[r][i]| in fp64 (rows in order), mn[i], mx[i].
struct PortableStats {
  static void Columns(const uint16_t* x, int64_t rows, int64_t stride, int64_t n, double* sum,
                      float* mn, float* mx) {
    for (int64_t i = 0; i < n; ++i) {
      const float f = HalfToFloat(x[i]);
      sum[i] = 0.0 + std::fabs(f);
      mn[i] = mx[i] = f;
    }
    for (int64_t r = 1; r < rows; ++r) {
      for (int64_t i = 0; i < n; ++i) {
        const float f = HalfToFloat(x[r * stride + i]);
        sum[i] += std::fabs(f);
        mn[i] = f < mn[i] ? f : mn[i];
        mx[i] = f > mx[i] ? f : mx[i];
      }
    }
  }
};

#define KVS_KVQUANT_AVX2 __attribute__((target("avx2,fma,f16c")))

struct Avx2Stats {
  // Rows are taken in groups of about 4 KiB (the next group is prefetched); within a group, 16
  // columns at a time keep four fp64 sums and two min/max vectors in registers.
  KVS_KVQUANT_AVX2 static void Columns(const uint16_t* x, int64_t rows, int64_t stride, int64_t n,
                                       double* sum, float* mn, float* mx) {
    const int64_t n16 = n / 16 * 16;
    if (n16 == 0) return PortableStats::Columns(x, rows, stride, n, sum, mn, mx);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const int64_t group = std::max<int64_t>(1, 2048 / n);
    for (int64_t r0 = 0; r0 < rows; r0 += group) {
      const int64_t r1 = std::min(rows, r0 + group);
      for (int64_t r = r1; r < std::min(rows, r1 + group); ++r) {
        for (int64_t i = 0; i < n; i += 32) {
          _mm_prefetch(reinterpret_cast<const char*>(x + r * stride + i), _MM_HINT_T0);
        }
      }
      for (int64_t i = 0; i < n16; i += 16) {
        __m256d acc[4];
        __m256 lo[2], hi[2];
        if (r0 == 0) {
          for (int j = 0; j < 4; ++j) acc[j] = _mm256_setzero_pd();
          lo[0] = hi[0] = pack2::Avx2::Load8(x + i);
          lo[1] = hi[1] = pack2::Avx2::Load8(x + i + 8);
        } else {
          for (int j = 0; j < 4; ++j) acc[j] = _mm256_loadu_pd(sum + i + 4 * j);
          for (int j = 0; j < 2; ++j) {
            lo[j] = _mm256_loadu_ps(mn + i + 8 * j);
            hi[j] = _mm256_loadu_ps(mx + i + 8 * j);
          }
        }
        for (int64_t r = r0; r < r1; ++r) {
          for (int j = 0; j < 2; ++j) {
            const __m256 f = pack2::Avx2::Load8(x + r * stride + i + 8 * j);
            const __m256 a = _mm256_andnot_ps(sign, f);
            acc[2 * j] = _mm256_add_pd(acc[2 * j], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
            acc[2 * j + 1] =
                _mm256_add_pd(acc[2 * j + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
            lo[j] = _mm256_min_ps(f, lo[j]);
            hi[j] = _mm256_max_ps(f, hi[j]);
          }
        }
        for (int j = 0; j < 4; ++j) _mm256_storeu_pd(sum + i + 4 * j, acc[j]);
        for (int j = 0; j < 2; ++j) {
          _mm256_storeu_ps(mn + i + 8 * j, lo[j]);
          _mm256_storeu_ps(mx + i + 8 * j, hi[j]);
        }
      }
    }
    PortableStats::Columns(x + n16, rows, stride, n - n16, sum + n16, mn + n16, mx + n16);
  }
};

// Rows [r0, r1), r0 a multiple of 4, in groups of 4: each group's codes are formed run by run
// into one code row and packed from a whole byte.
template <typename Isa>
void EncodeRows(const KvTensorView& t, const Blob<uint8_t>& b, const Workspace& w, int64_t n_runs,
                int64_t r0, int64_t r1, uint8_t* codes) {
  const int64_t HS = t.geom.heads * t.geom.tokens, D = t.geom.head_dim;
  const int64_t n_out = format::Kvquant2BitOutliers(D), n_normal = D - n_out;
  for (int64_t r = r0; r < r1; r += kRowGroup) {
    const int64_t rows = std::min(kRowGroup, r1 - r);
    for (int64_t j = 0; j < rows; ++j) {
      const int64_t l = (r + j) / HS;
      const uint16_t* x = t.data + (r + j) * D;
      for (int64_t i = 0; i < n_runs; ++i) {
        const Run& run = w.runs[i];
        Isa::QuantUniform(x + run.channel, w.zero[l], w.scale[l], run.len, kQmax,
                          codes + j * n_normal + run.index);
      }
      for (int64_t k = 0; k < n_out; ++k) {
        std::memcpy(b.outlier16 + 2 * ((r + j) * n_out + k), &x[w.outlier[k]], 2);
      }
    }
    pack2::Put<Isa>(b.codes, r * n_normal, codes, rows * n_normal);
  }
}

void EncodeTensorFast(const KvTensorView& t, uint8_t* blob, const Workspace& w, ThreadPool* pool) {
  const KvGeometry& g = t.geom;
  const int64_t H = g.heads, D = g.head_dim, slices = g.layers * H;
  const int64_t n_out = format::Kvquant2BitOutliers(D), n_normal = D - n_out;
  const bool avx2 = pack2::HasAvx2();
  const auto stats = avx2 ? Avx2Stats::Columns : PortableStats::Columns;
  RunShares(pool, slices, [&](int64_t, int64_t lh0, int64_t lh1) {
    for (int64_t lh = lh0; lh < lh1; ++lh) {
      stats(t.data + lh * g.slice_elements(), g.tokens, D, D, w.sum + lh * D, w.mn + lh * D,
            w.mx + lh * D);
    }
  });
  std::fill(w.total, w.total + D, 0.0);
  for (int64_t lh = 0; lh < slices; ++lh) {
    for (int64_t d = 0; d < D; ++d) w.total[d] += w.sum[lh * D + d];
  }
  const int64_t n_runs = SelectChannels(D, n_out, w);

  for (int64_t l = 0; l < g.layers; ++l) {
    float mn = HUGE_VALF, mx = -HUGE_VALF;
    for (int64_t lh = l * H; lh < (l + 1) * H; ++lh) {
      for (int64_t j = 0; j < n_normal; ++j) {
        mn = std::min(mn, w.mn[lh * D + w.normal[j]]);
        mx = std::max(mx, w.mx[lh * D + w.normal[j]]);
      }
    }
    if (n_normal == 0) mn = mx = 0.0f;
    Params(mn, mx, &w.scale[l], &w.zero[l]);
  }

  const Blob<uint8_t> b = WriteBlobHead(blob, g, w);
  StoreLayerParams(b, g, w);
  const int64_t rows = slices * g.tokens;
  pack2::ZeroPadding(b.codes, rows * n_normal);
  const auto encode = avx2 ? EncodeRows<pack2::Avx2> : EncodeRows<pack2::Portable>;
  RunShares(pool, (rows + kRowGroup - 1) / kRowGroup, [&](int64_t share, int64_t u0, int64_t u1) {
    encode(t, b, w, n_runs, kRowGroup * u0, std::min(rows, kRowGroup * u1),
           ThreadCodes(w, share, D));
  });
}

// ---- Decode. ----

// Checks a blob against the geometry and loads its channel lists into w.
absl::StatusOr<Blob<const uint8_t>> ParseBlob(absl::Span<const uint8_t> blob, const KvGeometry& g,
                                              const Workspace& w, int64_t* n_runs) {
  const format::Kvquant2BitBlob layout = format::Kvquant2BitBlobLayout(g);
  const int64_t D = g.head_dim, n_out = format::Kvquant2BitOutliers(D), n_normal = D - n_out;
  ByteReader r(blob);
  for (int i = 0; i < format::kKvquant2BitSections; ++i) {
    KVS_ASSIGN_OR_RETURN(uint32_t len, r.Get<uint32_t>("section length"));
    if (len != layout.len[i]) {
      return absl::InvalidArgumentError(absl::StrCat("kvquant_2bit: section ", i, " holds ", len,
                                                     " bytes, the geometry needs ", layout.len[i]));
    }
  }
  KVS_ASSIGN_OR_RETURN(uint32_t got_out, r.Get<uint32_t>("n_out"));
  KVS_ASSIGN_OR_RETURN(uint32_t got_normal, r.Get<uint32_t>("n_normal"));
  if (got_out != n_out || got_normal != n_normal) {
    return absl::InvalidArgumentError(absl::StrCat("kvquant_2bit: ", got_out, " outlier and ",
                                                   got_normal, " normal channels, expected ", n_out,
                                                   " and ", n_normal));
  }
  KVS_ASSIGN_OR_RETURN(const uint8_t* out_idx, r.Take(4 * n_out, "outlier indices"));
  KVS_ASSIGN_OR_RETURN(const uint8_t* normal_idx, r.Take(4 * n_normal, "normal indices"));
  std::fill(w.is_normal, w.is_normal + D, uint8_t{0});
  for (int64_t j = 0; j < n_normal; ++j) {
    w.normal[j] = LoadU32(normal_idx + 4 * j);
    if (w.normal[j] >= D || (j > 0 && w.normal[j] <= w.normal[j - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kvquant_2bit: normal channel list is not strictly ascending within [0, ", D, ")"));
    }
    w.is_normal[w.normal[j]] = 1;
  }
  for (int64_t k = 0; k < n_out; ++k) {
    w.outlier[k] = LoadU32(out_idx + 4 * k);
    if (w.outlier[k] >= D || w.is_normal[w.outlier[k]]) {
      return absl::InvalidArgumentError(absl::StrCat("kvquant_2bit: outlier channel ", w.outlier[k],
                                                     " is out of range, repeated or also normal"));
    }
    w.is_normal[w.outlier[k]] = 1;  // now: "taken"
  }
  *n_runs = BuildRuns(w.normal, n_normal, w.runs);
  Blob<const uint8_t> b;
  KVS_ASSIGN_OR_RETURN(b.outlier16, r.Take(layout.len[3], "outlier values"));
  KVS_ASSIGN_OR_RETURN(b.codes, r.Take(layout.len[4], "codes"));
  KVS_ASSIGN_OR_RETURN(b.scales, r.Take(layout.len[5], "scales"));
  KVS_ASSIGN_OR_RETURN(b.zeros, r.Take(layout.len[6], "zeros"));
  KVS_RETURN_IF_ERROR(r.ExpectEnd());
  for (int64_t l = 0; l < g.layers; ++l) {
    w.scale[l] = LoadF32(b.scales + 4 * l);
    w.zero[l] = LoadF32(b.zeros + 4 * l);
  }
  return b;
}

void DecodeTensorReference(const Blob<const uint8_t>& b, const Workspace& w,
                           const MutableKvTensorView& out) {
  const KvGeometry& g = out.geom;
  const int64_t HS = g.heads * g.tokens, D = g.head_dim;
  const int64_t n_out = format::Kvquant2BitOutliers(D), n_normal = D - n_out;
  for (int64_t r = 0; r < g.layers * HS; ++r) {
    const int64_t l = r / HS;
    uint16_t* y = out.data + r * D;
    for (int64_t j = 0; j < n_normal; ++j) {
      const float q = pack2::GetOne(b.codes, r * n_normal + j);
      y[w.normal[j]] = FloatToHalf(q * w.scale[l] + w.zero[l]);
    }
    for (int64_t k = 0; k < n_out; ++k) {
      std::memcpy(&y[w.outlier[k]], b.outlier16 + 2 * (r * n_out + k), 2);
    }
  }
}

template <typename Isa>
void DecodeRows(const Blob<const uint8_t>& b, const Workspace& w, int64_t n_runs,
                const MutableKvTensorView& out, int64_t r0, int64_t r1, uint8_t* codes) {
  const int64_t HS = out.geom.heads * out.geom.tokens, D = out.geom.head_dim;
  const int64_t n_out = format::Kvquant2BitOutliers(D), n_normal = D - n_out;
  for (int64_t r = r0; r < r1; r += kRowGroup) {
    const int64_t rows = std::min(kRowGroup, r1 - r);
    pack2::Get<Isa>(b.codes, r * n_normal, codes, rows * n_normal);
    for (int64_t j = 0; j < rows; ++j) {
      const int64_t l = (r + j) / HS;
      uint16_t* y = out.data + (r + j) * D;
      for (int64_t i = 0; i < n_runs; ++i) {
        const Run& run = w.runs[i];
        Isa::DequantUniform(codes + j * n_normal + run.index, w.scale[l], w.zero[l], run.len,
                            y + run.channel);
      }
      for (int64_t k = 0; k < n_out; ++k) {
        std::memcpy(&y[w.outlier[k]], b.outlier16 + 2 * ((r + j) * n_out + k), 2);
      }
    }
  }
}

class Kvquant2BitCodec final : public CodecBase {
 public:
  explicit Kvquant2BitCodec(const CodecOptions& o) : CodecBase(kInfo, o) {}

  size_t WorkspaceBytes(const KvGeometry& g, const ThreadPool* pool) const override {
    Carver c(nullptr);
    Layout(c, g, PoolThreads(pool), fast());
    return c.used();
  }

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::Kvquant2BitBodyBytes(g);
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t> ws, ThreadPool* pool) const override {
    const KvGeometry& g = kv.geom();
    Carver c(ws.data());
    const Workspace w = Layout(c, g, PoolThreads(pool), fast());
    const uint64_t blob = format::Kvquant2BitBlobLayout(g).total;
    for (int i = 0; i < 2; ++i) {
      const KvTensorView& t = i == 0 ? kv.k : kv.v;
      if (fast()) {
        EncodeTensorFast(t, body.data() + i * blob, w, pool);
      } else {
        EncodeTensorReference(t, body.data() + i * blob, w);
      }
    }
    return 2 * blob;
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t> ws, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    const KvGeometry& g = out.geom();
    Carver c(ws.data());
    const Workspace w = Layout(c, g, PoolThreads(pool), fast());
    const uint64_t blob = format::Kvquant2BitBlobLayout(g).total;
    for (int i = 0; i < 2; ++i) {
      const MutableKvTensorView& t = i == 0 ? out.k : out.v;
      int64_t n_runs = 0;
      KVS_ASSIGN_OR_RETURN(const Blob<const uint8_t> b,
                           ParseBlob(body.subspan(i * blob, blob), g, w, &n_runs));
      if (!fast()) {
        DecodeTensorReference(b, w, t);
        continue;
      }
      const auto decode = pack2::HasAvx2() ? DecodeRows<pack2::Avx2> : DecodeRows<pack2::Portable>;
      const int64_t rows = g.layers * g.heads * g.tokens;
      RunShares(pool, (rows + kRowGroup - 1) / kRowGroup, [&](int64_t share, int64_t u0, int64_t u1) {
        decode(b, w, n_runs, t, kRowGroup * u0, std::min(rows, kRowGroup * u1),
               ThreadCodes(w, share, g.head_dim));
      });
    }
    return absl::OkStatus();
  }

 private:
  bool fast() const { return options().path == CodecPath::kFast; }
};

}  // namespace

std::unique_ptr<Codec> NewKvquant2BitCodec(const CodecOptions& o) {
  return std::make_unique<Kvquant2BitCodec>(o);
}

}  // namespace kvs
