// kernels/cuda/device_common.cuh — internal: device helpers shared by the CUDA codec kernels
// (16-byte fp16 vectors, unaligned section stores, warp reductions, decode error bits).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/quant_math.cuh"

namespace kvs::cuda {

// Bits of the decode status word (workspace offset 0); see DecodeStatus().
enum DecodeError : uint32_t {
  kErrHeader = 1u << 0,     // magic, version, codec, dtype, geometry or body length
  kErrFlags = 1u << 1,      // header flags this codec does not know
  kErrRecord = 1u << 2,     // cachegen record header
  kErrSections = 1u << 3,   // kvquant section lengths or channel counts
  kErrChannels = 1u << 4,   // kvquant channel lists
  kErrPositions = 1u << 5,  // pruning positions (range, order)
};

inline constexpr int kVec = 8;  // fp16 values per 16-byte vector

// 8 fp16 values <-> 8 floats (exact up; RNE down).
__device__ __forceinline__ void Unpack8(const uint4& r, float f[8]) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}
__device__ __forceinline__ uint4 Pack8(const float f[8]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __half2 h = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
    w[i] = *reinterpret_cast<const uint32_t*>(&h);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}
// Element i (0..7) of a vector, as fp16 bits (i a compile-time constant after unrolling).
__device__ __forceinline__ uint16_t Elem(const uint4& r, int i) {
  const uint32_t w = (i >> 1) == 0 ? r.x : (i >> 1) == 1 ? r.y : (i >> 1) == 2 ? r.z : r.w;
  return static_cast<uint16_t>(i & 1 ? w >> 16 : w & 0xFFFFu);
}

__device__ __forceinline__ uint4 Load16(const void* p) { return *reinterpret_cast<const uint4*>(p); }
__device__ __forceinline__ void Store16(void* p, const uint4& v) { *reinterpret_cast<uint4*>(p) = v; }

// Stores into payload sections, which are 4-byte aligned only for some geometries.
__device__ __forceinline__ void StoreU32(uint8_t* p, uint32_t v) {
  if ((reinterpret_cast<uintptr_t>(p) & 3u) == 0) {
    *reinterpret_cast<uint32_t*>(p) = v;
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
  }
}
__device__ __forceinline__ void StoreF32(uint8_t* p, float v) { StoreU32(p, __float_as_uint(v)); }
__device__ __forceinline__ uint32_t LoadU32(const uint8_t* p) {
  if ((reinterpret_cast<uintptr_t>(p) & 3u) == 0) return *reinterpret_cast<const uint32_t*>(p);
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}
__device__ __forceinline__ float LoadF32(const uint8_t* p) { return __uint_as_float(LoadU32(p)); }

// Reductions over `width` consecutive lanes (a power of two, <= 32, aligned in the warp).
__device__ __forceinline__ uint32_t GroupMax(uint32_t v, int width) {
  for (int o = width / 2; o > 0; o /= 2) v = max(v, __shfl_xor_sync(0xFFFFFFFFu, v, o, width));
  return v;
}
__device__ __forceinline__ uint32_t GroupMin(uint32_t v, int width) {
  for (int o = width / 2; o > 0; o /= 2) v = min(v, __shfl_xor_sync(0xFFFFFFFFu, v, o, width));
  return v;
}

// Max of the 8 lanes' |x| as fp16 bits (for non-NaN values the bits order as the magnitudes).
__device__ __forceinline__ uint32_t AbsMaxBits8(const uint4& r) {
  const uint32_t m = __vmaxu2(__vmaxu2(r.x & 0x7FFF7FFFu, r.y & 0x7FFF7FFFu),
                              __vmaxu2(r.z & 0x7FFF7FFFu, r.w & 0x7FFF7FFFu));
  return max(m & 0xFFFFu, m >> 16);
}

// Min and max order keys (qm::OrderKey) of 8 values.
__device__ __forceinline__ void KeyMinMax8(const uint4& r, uint32_t* lo, uint32_t* hi) {
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const uint32_t k = qm::OrderKey(Elem(r, i));
    *lo = min(*lo, k);
    *hi = max(*hi, k);
  }
}

// a / b for non-negative a, b, by 32-bit division when both fit (the usual case: the 64-bit
// division is a long subroutine).
__device__ __forceinline__ int64_t Div64(int64_t a, int64_t b) {
  if (((a | b) >> 32) == 0) return static_cast<uint32_t>(a) / static_cast<uint32_t>(b);
  return a / b;
}

// Smallest power of two >= n (n in [1, 32]).
__host__ __device__ __forceinline__ int Pow2AtLeast(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

}  // namespace kvs::cuda
