// Grouped asymmetric INT4 (CODECS.md §2.6), shared by uniform_int4, mixed_k8v4,
// cascade_prune50_int4 and palu_int4. Interface and semantics: kernels/cpu/int4_group.h.
//
// Reference path: one group at a time in scalar fp32, straight from the spec, single-threaded.
// Fast path: groups split over the pool; per group, AVX2/F16C kernels (min/max on order-preserving
// integer keys of the fp16 bits, codes by a checked reciprocal multiply that falls back to true
// division near rounding boundaries, nibble packing; see below). Payloads and decoded values are
// bit-identical to the reference path. The portable fallback (no AVX2/F16C) runs the scalar group
// code in parallel.
// NaN inputs give unspecified (but in-bounds) codes: a NaN code rounds to 0.
#include "kernels/cpu/int4_group.h"

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "common/half/half.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/format/bytes.h"

namespace kvs::int4g {
namespace {

constexpr int64_t kGrain = 64;  // groups per parallel task (8 KiB of codes)
constexpr int64_t kPrefetchGroups = 64;  // how far ahead the fast encoder prefetches its input

// Scale and zero of a group from its min and max. Adding +0 turns a -0 extreme into +0, so that
// the scalar and vector min/max (which pick different zeros on ties) store the same bytes.
inline void GroupParams(float mn, float mx, float* scale, float* zero) {
  mn += 0.0f;
  mx += 0.0f;
  *scale = mx == mn ? 1.0f : (mx - mn) / 15.0f;
  *zero = mn;
}

// clip(rint(v), 0, 15); NaN -> 0 (same as the vector max/min below).
inline int Code(float v) {
  float r = std::nearbyint(v);
  r = r > 0.0f ? r : 0.0f;
  r = r < 15.0f ? r : 15.0f;
  return static_cast<int>(r);
}

// ---- scalar ----

// Quantises one group of 128 fp32 values (padding already zero).
void QuantGroupScalar(const float* x, uint8_t* packed, uint8_t* scale_out, uint8_t* zero_out) {
  float mn = x[0], mx = x[0];
  for (int i = 1; i < kGroup; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  float scale, zero;
  GroupParams(mn, mx, &scale, &zero);
  for (int j = 0; j < kGroup / 2; ++j) {
    const int hi = Code((x[2 * j] - zero) / scale);
    const int lo = Code((x[2 * j + 1] - zero) / scale);
    packed[j] = static_cast<uint8_t>(hi << 4 | lo);
  }
  StoreF32(scale_out, scale);
  StoreF32(zero_out, zero);
}

// Loads group g's values as fp32, zero-padding past n.
template <typename T>
void LoadGroupScalar(const T* x, int64_t n, int64_t g, float* buf) {
  const int64_t base = g * kGroup;
  for (int i = 0; i < kGroup; ++i) {
    const int64_t k = base + i;
    if (k >= n) {
      buf[i] = 0.0f;
    } else if constexpr (std::is_same_v<T, uint16_t>) {
      buf[i] = HalfToFloat(x[k]);
    } else {
      buf[i] = x[k];
    }
  }
}

template <typename T>
void EncodeGroupsScalar(const T* x, int64_t n, int64_t g0, int64_t g1, uint8_t* packed,
                        uint8_t* scales, uint8_t* zeros) {
  float buf[kGroup];
  for (int64_t g = g0; g < g1; ++g) {
    LoadGroupScalar(x, n, g, buf);
    QuantGroupScalar(buf, packed + g * (kGroup / 2), scales + 4 * g, zeros + 4 * g);
  }
}

void DecodeGroupsScalar(const uint8_t* packed, const uint8_t* scales, const uint8_t* zeros,
                        int64_t n, int64_t g0, int64_t g1, uint16_t* out) {
  for (int64_t g = g0; g < g1; ++g) {
    const float scale = LoadF32(scales + 4 * g), zero = LoadF32(zeros + 4 * g);
    const int64_t end = std::min(n, (g + 1) * kGroup);
    for (int64_t k = g * kGroup; k < end; ++k) {
      const uint8_t b = packed[k / 2];
      const int q = (k % 2 == 0) ? b >> 4 : b & 0xF;
      out[k] = FloatToHalf(static_cast<float>(q) * scale + zero);
    }
  }
}

// ---- AVX2 / F16C ----
//
// The vector kernel multiplies by the reciprocal of the scale and checks the result. With
// d = fl(x - zero) in [0, range], the product y = fl(d * fl(1 / scale)) and the reference quotient
// fl(d / scale) both lie within 2^-24 relative steps of d / scale, so they differ by at most
// 3 * 2^-24 * 15.0001 < 2^-18: they round to the same integer unless y lies that close to a
// half-integer. A lane within 2^-16 of one sends its 64-value half-group to the division kernel,
// which is the reference's arithmetic. Groups whose scale is not a normal finite float
// (infinities, NaN, fp32 ranges below 15 * FLT_MIN) go to the division kernel too.

#define KVS_AVX2 __attribute__((target("avx2,f16c")))

// fp16 bits <-> int16 keys whose signed order is the order of the (non-NaN) values.
KVS_AVX2 inline __m256i OrderKeys(__m256i h) {
  return _mm256_xor_si256(h, _mm256_and_si256(_mm256_srai_epi16(h, 15), _mm256_set1_epi16(0x7FFF)));
}
inline uint16_t KeyToHalf(uint16_t k) { return (k & 0x8000) ? k ^ 0x7FFF : k; }

KVS_AVX2 inline void MinMaxF16(const uint16_t* src, float* mn, float* mx) {
  __m256i lo = _mm256_set1_epi16(0x7FFF), hi = _mm256_set1_epi16(-0x8000);
  for (int i = 0; i < kGroup; i += 16) {
    const __m256i k = OrderKeys(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    lo = _mm256_min_epi16(lo, k);
    hi = _mm256_max_epi16(hi, k);
  }
  const __m128i l = _mm_min_epi16(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
  const __m128i h = _mm_max_epi16(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
  // Signed min = unsigned min of key ^ 0x8000; signed max = 0x7FFF ^ unsigned min of key ^ 0x7FFF.
  const int kl = _mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(l, _mm_set1_epi16(-0x8000))), 0);
  const int kh = _mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(h, _mm_set1_epi16(0x7FFF))), 0);
  *mn = _cvtsh_ss(KeyToHalf(static_cast<uint16_t>(kl ^ 0x8000)));
  *mx = _cvtsh_ss(KeyToHalf(static_cast<uint16_t>(kh ^ 0x7FFF)));
}

KVS_AVX2 inline void MinMaxF32(const float* src, float* mn, float* mx) {
  __m256 lo = _mm256_loadu_ps(src), hi = lo;
  for (int i = 8; i < kGroup; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i);
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
  }
  __m128 l = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps(hi, 1));
  l = _mm_min_ps(l, _mm_movehl_ps(l, l));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  *mn = _mm_cvtss_f32(_mm_min_ss(l, _mm_shuffle_ps(l, l, 1)));
  *mx = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
}

template <typename T>
KVS_AVX2 inline __m256 Load8(const T* p) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    return _mm256_loadu_ps(p);
  }
}

// 8 values -> 8 int32 codes, by division (the reference's arithmetic).
KVS_AVX2 inline __m256i CodesDiv8(__m256 x, __m256 zero, __m256 scale) {
  __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_sub_ps(x, zero), scale),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(15.0f));
  return _mm256_cvttps_epi32(r);
}

// 8 values -> 8 int32 codes, by the reciprocal; *dist collects the largest distance of a lane
// from its rounded value (0.5 = on a rounding boundary).
KVS_AVX2 inline __m256i CodesMul8(__m256 x, __m256 zero, __m256 inv, __m256* dist) {
  const __m256 y = _mm256_mul_ps(_mm256_sub_ps(x, zero), inv);
  const __m256 r = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  *dist = _mm256_max_ps(*dist, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(y, r)));
  return _mm256_cvttps_epi32(r);
}

// 64 codes (8 x 8 int32 in 0..15, in order) -> 32 packed bytes, high nibble first.
KVS_AVX2 inline void Pack64(const __m256i* c, uint8_t* packed) {
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i nib = _mm256_set1_epi16(0x0110);  // pairs (c[2j], c[2j+1]) -> 16*c[2j] + c[2j+1]
  __m256i b[2];
  for (int k = 0; k < 2; ++k) {
    const __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(c[4 * k], c[4 * k + 1]),
                                          _mm256_packs_epi32(c[4 * k + 2], c[4 * k + 3]));
    b[k] = _mm256_maddubs_epi16(_mm256_permutevar8x32_epi32(w, order), nib);
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed),
                      _mm256_permute4x64_epi64(_mm256_packus_epi16(b[0], b[1]), 0xD8));
}

// Scale, zero and reciprocal of up to 8 groups from their min and max: GroupParams in vector
// form (the same fp32 operations). `fast` says whether the checked-reciprocal kernel may run:
// finite zero and a normal finite scale.
struct GroupBatch {
  alignas(32) float mn[8], mx[8], scale[8], zero[8], inv[8];
  alignas(32) int32_t fast[8];
};

KVS_AVX2 inline void BatchParams(GroupBatch* b) {
  const __m256 zero = _mm256_setzero_ps(), inf = _mm256_set1_ps(INFINITY);
  const __m256 lo = _mm256_add_ps(_mm256_load_ps(b->mn), zero);  // -0 -> +0, as GroupParams
  const __m256 hi = _mm256_add_ps(_mm256_load_ps(b->mx), zero);
  __m256 scale = _mm256_div_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps(15.0f));
  scale = _mm256_blendv_ps(scale, _mm256_set1_ps(1.0f), _mm256_cmp_ps(hi, lo, _CMP_EQ_OQ));
  const __m256 fast = _mm256_and_ps(
      _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), lo), inf, _CMP_LT_OQ),
      _mm256_and_ps(_mm256_cmp_ps(scale, _mm256_set1_ps(FLT_MIN), _CMP_GE_OQ),
                    _mm256_cmp_ps(scale, inf, _CMP_LT_OQ)));
  _mm256_store_ps(b->scale, scale);
  _mm256_store_ps(b->zero, lo);
  _mm256_store_ps(b->inv, _mm256_div_ps(_mm256_set1_ps(1.0f), scale));
  _mm256_store_ps(reinterpret_cast<float*>(b->fast), fast);
}

// Quantises the 128 values at x (fp16 or fp32) with group j of `b` into 64 packed bytes.
template <typename T>
KVS_AVX2 void QuantGroupAvx2(const T* x, const GroupBatch& b, int j, uint8_t* packed,
                             uint8_t* scale_out, uint8_t* zero_out) {
  const __m256 vs = _mm256_set1_ps(b.scale[j]), vz = _mm256_set1_ps(b.zero[j]);
  const __m256 inv = _mm256_set1_ps(b.inv[j]);
  for (int half = 0; half < 2; ++half) {
    const T* p = x + 64 * half;
    __m256i c[8];
    __m256 dist = _mm256_setzero_ps();
    if (b.fast[j]) {
      for (int i = 0; i < 8; ++i) c[i] = CodesMul8(Load8(p + 8 * i), vz, inv, &dist);
    }
    const __m256 near = _mm256_cmp_ps(dist, _mm256_set1_ps(0.5f - 0x1p-16f), _CMP_NLT_UQ);
    if (!b.fast[j] || !_mm256_testz_ps(near, near)) {
      for (int i = 0; i < 8; ++i) c[i] = CodesDiv8(Load8(p + 8 * i), vz, vs);
    }
    Pack64(c, packed + 32 * half);
  }
  StoreF32(scale_out, b.scale[j]);
  StoreF32(zero_out, b.zero[j]);
}

// Full groups [g0, g1), 8 at a time: min/max of each, their parameters together, then codes.
template <typename T>
KVS_AVX2 void EncodeGroupsAvx2(const T* x, int64_t g0, int64_t g1, uint8_t* packed,
                               uint8_t* scales, uint8_t* zeros) {
  GroupBatch b;
  for (int64_t g = g0; g < g1; g += 8) {
    const int count = static_cast<int>(std::min<int64_t>(8, g1 - g));
    for (int j = 0; j < 8; ++j) {
      if (j >= count) {
        b.mn[j] = b.mx[j] = 0.0f;
        continue;
      }
      const T* src = x + (g + j) * kGroup;
      if constexpr (std::is_same_v<T, uint16_t>) {
        MinMaxF16(src, &b.mn[j], &b.mx[j]);
      } else {
        MinMaxF32(src, &b.mn[j], &b.mx[j]);
      }
    }
    BatchParams(&b);
    for (int j = 0; j < count; ++j) {
      const int64_t gj = g + j;
      if (gj + kPrefetchGroups < g1) {  // the hardware prefetcher alone leaves the stream
        const char* p = reinterpret_cast<const char*>(x + (gj + kPrefetchGroups) * kGroup);
        for (size_t k = 0; k < kGroup * sizeof(T); k += 64) _mm_prefetch(p + k, _MM_HINT_T0);
      }
      QuantGroupAvx2(x + gj * kGroup, b, j, packed + gj * (kGroup / 2), scales + 4 * gj,
                     zeros + 4 * gj);
    }
  }
}

// Padded last group: load through the scalar loader, then the vector kernel.
template <typename T>
KVS_AVX2 void EncodeTailAvx2(const T* x, int64_t n, int64_t g, uint8_t* packed, uint8_t* scales,
                             uint8_t* zeros) {
  alignas(32) float buf[kGroup];
  LoadGroupScalar(x, n, g, buf);
  GroupBatch b;
  MinMaxF32(buf, &b.mn[0], &b.mx[0]);
  for (int j = 1; j < 8; ++j) b.mn[j] = b.mx[j] = 0.0f;
  BatchParams(&b);
  QuantGroupAvx2(buf, b, 0, packed + g * (kGroup / 2), scales + 4 * g, zeros + 4 * g);
}

// 16 codes (bytes) -> 16 fp16 values.
KVS_AVX2 inline void Dequant16(__m128i codes, __m256 vs, __m256 vz, uint16_t* out) {
  const __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes));
  const __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8)));
  const __m256 y0 = _mm256_add_ps(_mm256_mul_ps(f0, vs), vz);
  const __m256 y1 = _mm256_add_ps(_mm256_mul_ps(f1, vs), vz);
  const __m128i h0 = _mm256_cvtps_ph(y0, _MM_FROUND_TO_NEAREST_INT);
  const __m128i h1 = _mm256_cvtps_ph(y1, _MM_FROUND_TO_NEAREST_INT);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_set_m128i(h1, h0));
}

// Full groups [g0, g1).
KVS_AVX2 void DecodeAvx2(const uint8_t* packed, const uint8_t* scales, const uint8_t* zeros,
                         int64_t g0, int64_t g1, uint16_t* out) {
  const __m128i lo_mask = _mm_set1_epi8(0x0F);
  for (int64_t g = g0; g < g1; ++g) {
    const __m256 vs = _mm256_set1_ps(LoadF32(scales + 4 * g));
    const __m256 vz = _mm256_set1_ps(LoadF32(zeros + 4 * g));
    const uint8_t* src = packed + g * (kGroup / 2);
    uint16_t* dst = out + g * kGroup;
    for (int i = 0; i < kGroup / 2; i += 16) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), lo_mask);
      const __m128i lo = _mm_and_si128(b, lo_mask);
      Dequant16(_mm_unpacklo_epi8(hi, lo), vs, vz, dst + 2 * i);
      Dequant16(_mm_unpackhi_epi8(hi, lo), vs, vz, dst + 2 * i + 16);
    }
  }
}

#undef KVS_AVX2

template <typename T>
void Encode(const T* x, int64_t n, uint8_t* packed, uint8_t* scales, uint8_t* zeros,
            CodecPath path, ThreadPool* pool) {
  const int64_t groups = Groups(n);
  if (path == CodecPath::kReference) {
    EncodeGroupsScalar(x, n, 0, groups, packed, scales, zeros);
    return;
  }
  const int64_t full = n / kGroup;
  const bool avx2 = HasAvx2F16c();
  ParallelFor(pool, groups, [&](int64_t g0, int64_t g1) {
    if (!avx2) return EncodeGroupsScalar(x, n, g0, g1, packed, scales, zeros);
    const int64_t f1 = std::min(g1, full);
    if (g0 < f1) EncodeGroupsAvx2(x, g0, f1, packed, scales, zeros);
    if (g1 > full) EncodeTailAvx2(x, n, full, packed, scales, zeros);
  }, kGrain);
}

}  // namespace

void EncodeF16(const uint16_t* x, int64_t n, uint8_t* packed, uint8_t* scales, uint8_t* zeros,
               CodecPath path, ThreadPool* pool) {
  Encode(x, n, packed, scales, zeros, path, pool);
}

void EncodeF32(const float* x, int64_t n, uint8_t* packed, uint8_t* scales, uint8_t* zeros,
               CodecPath path, ThreadPool* pool) {
  Encode(x, n, packed, scales, zeros, path, pool);
}

void DecodeF16(const uint8_t* packed, const uint8_t* scales, const uint8_t* zeros, int64_t n,
               uint16_t* out, CodecPath path, ThreadPool* pool) {
  const int64_t groups = Groups(n);
  if (path == CodecPath::kReference) {
    DecodeGroupsScalar(packed, scales, zeros, n, 0, groups, out);
    return;
  }
  const int64_t full = n / kGroup;
  const bool avx2 = HasAvx2F16c();
  ParallelFor(pool, groups, [&](int64_t g0, int64_t g1) {
    if (!avx2) return DecodeGroupsScalar(packed, scales, zeros, n, g0, g1, out);
    const int64_t f1 = std::min(g1, full);
    if (g0 < f1) DecodeAvx2(packed, scales, zeros, g0, f1, out);
    if (g1 > full) DecodeGroupsScalar(packed, scales, zeros, n, std::max(g0, full), g1, out);
  }, kGrain);
}

}  // namespace kvs::int4g
