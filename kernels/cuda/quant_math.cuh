// kernels/cuda/quant_math.cuh — internal: the scalar arithmetic of the codecs, written once for
// the CUDA kernels (__device__) and for the host (so that tests/gpu/quant_math_test.cc checks it
// on the CPU against the CPU codecs' own functions, with no GPU).
//
// Every function is the CPU reference's operation sequence (CODECS.md §1.2): fp32, true division,
// round-half-to-even, the same clip comparisons (so NaN lands where the CPU puts it), no fused
// multiply-add (the device path uses the _rn intrinsics, which the compiler never contracts).
// Include from .cu files or from host C++; nothing here needs the CUDA runtime.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/half/half.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define KVS_HD __host__ __device__ __forceinline__
#else
#define KVS_HD inline
#endif
#if defined(__CUDA_ARCH__)
#define KVS_UNROLL _Pragma("unroll")
#else
#define KVS_UNROLL
#endif

namespace kvs::cuda::qm {

// ---- fp32 operations, correctly rounded, never contracted ----

KVS_HD float Add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KVS_HD float Sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
KVS_HD float Mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KVS_HD float Div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
KVS_HD float Rint(float x) {  // round half to even (FE_TONEAREST on the host)
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}
KVS_HD uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
KVS_HD float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// fp16 bits -> fp32 (exact) and fp32 -> fp16 bits (round to nearest even, overflow -> inf).
KVS_HD float HalfToFloat(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  return ::kvs::HalfToFloat(h);
#endif
}
KVS_HD uint16_t FloatToHalf(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  return ::kvs::FloatToHalf(f);
#endif
}

// ---- per-layer scaled 8-bit codes (uniform_int8, mixed_k8v4 keys, fp8_e4m3) ----

inline constexpr float kInt8Qmax = 127.0f;
inline constexpr float kE4m3Max = 448.0f;       // format::kE4m3Max
inline constexpr float kFp8CompatRange = 240.0f;  // format::kFp8CompatRange

// scale = amax / range, 1.0 when amax == 0.
KVS_HD float LayerScale(float amax, float range) { return amax == 0.0f ? 1.0f : Div(amax, range); }

// uniform_int8: clip(rint(x / scale), -127, 127); NaN -> -127.
KVS_HD int8_t Int8Code(float x, float scale) {
  float r = Rint(Div(x, scale));
  r = r > -127.0f ? r : -127.0f;
  r = r < 127.0f ? r : 127.0f;
  return static_cast<int8_t>(static_cast<int>(r));
}

// fp8_e4m3 compat (the reference's offset-uint8): clip(rint(x / scale + 128), 0, 255); NaN -> 0.
KVS_HD uint8_t CompatCode(float x, float scale) {
  float r = Rint(Add(Div(x, scale), 128.0f));
  r = r > 0.0f ? r : 0.0f;
  r = r < 255.0f ? r : 255.0f;
  return static_cast<uint8_t>(static_cast<int>(r));
}

// fp32 -> E4M3 (float8_e4m3fn) code: round to nearest even, saturate to ±448 (infinities too),
// NaN -> 0x7F with the sign. format::E4m3FromFloat, operation for operation.
KVS_HD uint8_t E4m3FromFloat(float v) {
  const uint32_t b = FloatBits(v);
  const uint32_t sign = (b >> 24) & 0x80u;
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint8_t>(sign | 0x7Fu);
  if (a >= 0x43E00000u) return static_cast<uint8_t>(sign | 0x7Eu);
  if (a < 0x3C800000u) {  // below 2^-6: the FPU rounds |v| + 2^14 to the 2^-9 grid
    const uint32_t rb = FloatBits(Add(BitsFloat(a), 16384.0f));
    return static_cast<uint8_t>(sign | (rb - 0x46800000u));
  }
  uint32_t u = a - (120u << 23);
  u += 0x7FFFFu + ((u >> 20) & 1u);
  return static_cast<uint8_t>(sign | (u >> 20));
}

// E4M3 code -> fp32 (exact): sign << 15 | (code & 0x7F) << 7 is the fp16 pattern of value/256
// (subnormals included), as the CPU fast path decodes; the NaN codes give a NaN.
KVS_HD float E4m3ToFloat(uint8_t c) {
  if ((c & 0x7Fu) == 0x7Fu) return BitsFloat((static_cast<uint32_t>(c & 0x80u) << 24) | 0x7FC00000u);
  const uint16_t h = static_cast<uint16_t>((c & 0x80u) << 8 | (c & 0x7Fu) << 7);
  return Mul(HalfToFloat(h), 256.0f);
}

// ---- asymmetric uniform codes (int4 groups, kivi, kvquant, cachegen) ----

// uniform_int4 groups (kernels/cpu/int4_group.cc GroupParams): -0 extremes become +0;
// scale = (max - min) / 15, or 1 when max == min; zero = min.
KVS_HD void Int4Params(float mn, float mx, float* scale, float* zero) {
  mn = Add(mn, 0.0f);
  mx = Add(mx, 0.0f);
  *scale = mx == mn ? 1.0f : Div(Sub(mx, mn), 15.0f);
  *zero = mn;
}

// kivi_2bit, kvquant_2bit, cachegen: range = max - min (a zero range counts as 1),
// scale = range / qmax, zero = min with -0 stored as +0.
KVS_HD void RangeParams(float mn, float mx, float qmax, float* scale, float* zero) {
  float range = Sub(mx, mn);
  if (range == 0.0f) range = 1.0f;
  *scale = Div(range, qmax);
  *zero = Add(mn, 0.0f);
}

// clip(rint((x - zero) / scale), 0, qmax); NaN -> 0.
KVS_HD uint32_t AsymCode(float x, float zero, float scale, float qmax) {
  float r = Rint(Div(Sub(x, zero), scale));
  r = r > 0.0f ? r : 0.0f;
  r = r < qmax ? r : qmax;
  return static_cast<uint32_t>(static_cast<int>(r));
}

// q · scale + zero in fp32, two roundings (no FMA).
KVS_HD float Dequant(float q, float scale, float zero) { return Add(Mul(q, scale), zero); }

// ---- fp16 order keys: for non-NaN values, key order = value order (-0 just below +0) ----

KVS_HD uint32_t OrderKey(uint16_t h) {
  return (h & 0x8000u) ? (~static_cast<uint32_t>(h) & 0xFFFFu) : (h | 0x8000u);
}
KVS_HD uint16_t KeyToHalf(uint32_t k) {
  return static_cast<uint16_t>((k & 0x8000u) ? (k & 0x7FFFu) : (~k & 0xFFFFu));
}

// ---- kvquant_2bit channel magnitudes: |x| of a finite fp16 as an exact integer in units of
// 2^-24 (below 2^40): integer sums of them are exact and independent of the order ----

KVS_HD uint64_t AbsFixed(uint16_t h) {
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  return e == 0 ? m : static_cast<uint64_t>(1024u + m) << (e - 1);
}
KVS_HD bool IsFiniteHalf(uint16_t h) { return (h & 0x7C00u) != 0x7C00u; }

// ---- top-k token scores: Σ x² of one key row in NumPy's pairwise order (kernels/cpu/prune.cc):
// n < 8 sequentially; n <= 128 as 8 interleaved partial sums combined
// ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) plus the n % 8 tail in order; above 128, the two halves
// (cut at a multiple of 8) summed so, recursively ----

KVS_HD float SumSqBlock(const uint16_t* x, int n) {
  if (n < 8) {
    float res = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float v = HalfToFloat(x[i]);
      res = Add(res, Mul(v, v));
    }
    return res;
  }
  float r[8];
KVS_UNROLL
  for (int j = 0; j < 8; ++j) {
    const float v = HalfToFloat(x[j]);
    r[j] = Mul(v, v);
  }
  int i = 8;
  for (; i < n - n % 8; i += 8) {
KVS_UNROLL
    for (int j = 0; j < 8; ++j) {
      const float v = HalfToFloat(x[i + j]);
      r[j] = Add(r[j], Mul(v, v));
    }
  }
  float res = Add(Add(Add(r[0], r[1]), Add(r[2], r[3])), Add(Add(r[4], r[5]), Add(r[6], r[7])));
  for (; i < n; ++i) {
    const float v = HalfToFloat(x[i]);
    res = Add(res, Mul(v, v));
  }
  return res;
}

// Rows up to 256 values (the CUDA codecs' limit on D) need at most one split.
KVS_HD float PairwiseSumSq(const uint16_t* x, int n) {
  if (n <= 128) return SumSqBlock(x, n);
  int half = n / 2;
  half -= half % 8;
  return Add(SumSqBlock(x, half), SumSqBlock(x + half, n - half));
}

// The order in which top-k ranks tokens, as a 32-bit key (larger = kept first): NaN scores above
// every number (no number maps to 0xFFFFFFFF), then by value, -0 equal to +0. Ties are broken
// by position outside the key.
KVS_HD uint32_t ScoreKey(float s) {
  if (s != s) return 0xFFFFFFFFu;
  const uint32_t b = FloatBits(Add(s, 0.0f));
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

}  // namespace kvs::cuda::qm
