// Grouped asymmetric INT4 (CODECS.md §2.6), shared by uniform_int4, mixed_k8v4, cascade_prune50_int4
// and palu_int4. Interface and semantics: kernels/cpu/int4_group.h.
//
// Reference path: one group at a time in scalar fp32, straight from the spec, single-threaded.
// Fast path: groups split over the pool; per group, an AVX2/F16C kernel (fp16 -> fp32 into a
// 128-float stack buffer with min/max on the way, true division, RNE, clip, nibble packing).
// Both paths compute the same fp32 operations in the same order, so payloads and decoded values
// are bit-identical. The portable fallback (no AVX2/F16C) runs the scalar group code in parallel.
// NaN inputs give unspecified (but in-bounds) codes: a NaN code rounds to 0.
#include "kernels/cpu/int4_group.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/half/half.h"
#include "kernels/format/bytes.h"

namespace kvs::int4g {
namespace {

constexpr int64_t kGrain = 64;  // groups per parallel task (8 KiB of codes)

bool HasAvx2F16c() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return ok;
}

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

__attribute__((target("avx2,f16c"))) inline float HMin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
__attribute__((target("avx2,f16c"))) inline float HMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// 8 values -> 8 int32 codes.
__attribute__((target("avx2,f16c"))) inline __m256i Codes8(__m256 x, __m256 zero, __m256 scale) {
  __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_sub_ps(x, zero), scale),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(15.0f));
  return _mm256_cvttps_epi32(r);
}

// 32 codes (4 x 8 int32, in order) -> 32 bytes in order.
__attribute__((target("avx2,f16c"))) inline __m256i Bytes32(__m256i a, __m256i b, __m256i c,
                                                             __m256i d) {
  const __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
  return _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Quantises the 128 fp32 values at x (min and max known) into 64 packed bytes.
__attribute__((target("avx2,f16c"))) void QuantGroupAvx2(const float* x, float mn, float mx,
                                                          uint8_t* packed, uint8_t* scale_out,
                                                          uint8_t* zero_out) {
  float scale, zero;
  GroupParams(mn, mx, &scale, &zero);
  const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zero);
  const __m256i nib = _mm256_set1_epi16(0x0110);  // pairs (c[2j], c[2j+1]) -> 16*c[2j] + c[2j+1]
  for (int half = 0; half < 2; ++half) {
    const float* p = x + 64 * half;
    __m256i c[8];
    for (int i = 0; i < 8; ++i) c[i] = Codes8(_mm256_loadu_ps(p + 8 * i), vz, vs);
    const __m256i b0 = Bytes32(c[0], c[1], c[2], c[3]);
    const __m256i b1 = Bytes32(c[4], c[5], c[6], c[7]);
    const __m256i w = _mm256_packus_epi16(_mm256_maddubs_epi16(b0, nib),
                                          _mm256_maddubs_epi16(b1, nib));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + 32 * half),
                        _mm256_permute4x64_epi64(w, 0xD8));
  }
  StoreF32(scale_out, scale);
  StoreF32(zero_out, zero);
}

// Full groups [g0, g1) of fp16 input.
__attribute__((target("avx2,f16c"))) void EncodeF16Avx2(const uint16_t* x, int64_t g0, int64_t g1,
                                                         uint8_t* packed, uint8_t* scales,
                                                         uint8_t* zeros) {
  alignas(32) float buf[kGroup];
  for (int64_t g = g0; g < g1; ++g) {
    const uint16_t* src = x + g * kGroup;
    __m256 mn = _mm256_set1_ps(INFINITY), mx = _mm256_set1_ps(-INFINITY);
    for (int i = 0; i < kGroup; i += 8) {
      const __m256 v =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
      _mm256_store_ps(buf + i, v);
      mn = _mm256_min_ps(mn, v);
      mx = _mm256_max_ps(mx, v);
    }
    QuantGroupAvx2(buf, HMin(mn), HMax(mx), packed + g * (kGroup / 2), scales + 4 * g,
                   zeros + 4 * g);
  }
}

// Full groups [g0, g1) of fp32 input.
__attribute__((target("avx2,f16c"))) void EncodeF32Avx2(const float* x, int64_t g0, int64_t g1,
                                                         uint8_t* packed, uint8_t* scales,
                                                         uint8_t* zeros) {
  for (int64_t g = g0; g < g1; ++g) {
    const float* src = x + g * kGroup;
    __m256 mn = _mm256_set1_ps(INFINITY), mx = _mm256_set1_ps(-INFINITY);
    for (int i = 0; i < kGroup; i += 8) {
      const __m256 v = _mm256_loadu_ps(src + i);
      mn = _mm256_min_ps(mn, v);
      mx = _mm256_max_ps(mx, v);
    }
    QuantGroupAvx2(src, HMin(mn), HMax(mx), packed + g * (kGroup / 2), scales + 4 * g,
                   zeros + 4 * g);
  }
}

// Padded last group: load through the scalar loader, then the vector kernel.
template <typename T>
__attribute__((target("avx2,f16c"))) void EncodeTailAvx2(const T* x, int64_t n, int64_t g,
                                                          uint8_t* packed, uint8_t* scales,
                                                          uint8_t* zeros) {
  alignas(32) float buf[kGroup];
  LoadGroupScalar(x, n, g, buf);
  float mn = buf[0], mx = buf[0];
  for (int i = 1; i < kGroup; ++i) {
    mn = std::min(mn, buf[i]);
    mx = std::max(mx, buf[i]);
  }
  QuantGroupAvx2(buf, mn, mx, packed + g * (kGroup / 2), scales + 4 * g, zeros + 4 * g);
}

// 16 codes (bytes) -> 16 fp16 values.
__attribute__((target("avx2,f16c"))) inline void Dequant16(__m128i codes, __m256 vs, __m256 vz,
                                                           uint16_t* out) {
  const __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes));
  const __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8)));
  const __m128i h0 = _mm256_cvtps_ph(_mm256_add_ps(_mm256_mul_ps(f0, vs), vz), _MM_FROUND_TO_NEAREST_INT);
  const __m128i h1 = _mm256_cvtps_ph(_mm256_add_ps(_mm256_mul_ps(f1, vs), vz), _MM_FROUND_TO_NEAREST_INT);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_set_m128i(h1, h0));
}

// Full groups [g0, g1).
__attribute__((target("avx2,f16c"))) void DecodeAvx2(const uint8_t* packed, const uint8_t* scales,
                                                      const uint8_t* zeros, int64_t g0, int64_t g1,
                                                      uint16_t* out) {
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
    if (g0 < f1) {
      if constexpr (std::is_same_v<T, uint16_t>) {
        EncodeF16Avx2(x, g0, f1, packed, scales, zeros);
      } else {
        EncodeF32Avx2(x, g0, f1, packed, scales, zeros);
      }
    }
    for (int64_t g = std::max(g0, full); g < g1; ++g) EncodeTailAvx2(x, n, g, packed, scales, zeros);
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
