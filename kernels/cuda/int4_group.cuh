// kernels/cuda/int4_group.cuh — internal, include from .cu files only: grouped asymmetric INT4
// (CODECS.md §2.6, kernels/cpu/int4_group.h) as device templates, for uniform_int4, mixed_k8v4
// (values) and cascade_prune50_int4 (the kept rows, gathered on the fly).
//
// n values (a multiple of 8) in groups of 128, the last one zero-padded. One half-warp per group,
// one 16-byte vector of 8 values per lane: min/max by shuffles within the 16 lanes, then
// scale = (max - min)/15 (1 when equal), zero = min, q = clip(rint((x - zero)/scale), 0, 15),
// 8 codes -> one 4-byte store (element 2j in the high nibble); lane 0 stores scale and zero.
// Group-local and one pass: 2 bytes read and 0.5625 written per value. Decode mirrors it.
// The value at element e comes from src(e) (8 consecutive values there) and goes to dst(e), so
// a caller can gather or scatter rows without a staging copy.
#pragma once

#include <cstdint>

#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/device_common.cuh"

namespace kvs::cuda::int4 {

inline constexpr int kGroup = 128;
inline constexpr int kLanes = kGroup / kVec;  // 16 lanes per group
inline constexpr int kThreads = 256;          // 16 groups per block

// One tensor's INT4 sections (kernels/format/uniform_int4.h): packed 64·G bytes (4-aligned),
// scales and zeros G f32 each (any alignment).
struct Sections {
  uint8_t* packed;
  uint8_t* scales;
  uint8_t* zeros;
};
struct ConstSections {
  const uint8_t* packed;
  const uint8_t* scales;
  const uint8_t* zeros;
};

// Values [e, e + 8) of a contiguous tensor.
struct Contiguous {
  const uint16_t* x;
  __device__ const uint16_t* operator()(int64_t e) const { return x + e; }
};
struct ContiguousOut {
  uint16_t* y;
  __device__ uint16_t* operator()(int64_t e) const { return y + e; }
};

template <typename Src>
struct EncodeJob {
  Src src;
  Sections sec;
};
template <typename Dst>
struct DecodeJob {
  ConstSections sec;
  Dst dst;
};

__device__ __forceinline__ unsigned HalfWarpMask() {
  return (threadIdx.x & 16) ? 0xFFFF0000u : 0x0000FFFFu;
}

// Jobs 0 and 1 (n_jobs of them) each hold n values; the grid covers n_jobs · ⌈n/128⌉ groups.
template <typename Src>
__global__ void __launch_bounds__(kThreads)
    EncodeKernel(EncodeJob<Src> j0, EncodeJob<Src> j1, int64_t n, int64_t groups, int n_jobs) {
  const int64_t gid = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kLanes;
  const int lane = threadIdx.x % kLanes;
  const bool live = gid < n_jobs * groups;  // dead lanes still take part in the shuffles
  const EncodeJob<Src> job = gid < groups ? j0 : j1;  // by value: no local copy
  const int64_t g = gid < groups ? gid : gid - groups;
  const int64_t e = g * kGroup + lane * kVec;
  float f[8];
  if (live && e < n) {
    Unpack8(Load16(job.src(e)), f);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) f[i] = 0.0f;  // the zero padding takes part in min/max
  }
  float mn = f[0], mx = f[0];
#pragma unroll
  for (int i = 1; i < kVec; ++i) {
    mn = fminf(mn, f[i]);
    mx = fmaxf(mx, f[i]);
  }
  const unsigned mask = HalfWarpMask();
#pragma unroll
  for (int o = kLanes / 2; o > 0; o /= 2) {
    mn = fminf(mn, __shfl_xor_sync(mask, mn, o, kLanes));
    mx = fmaxf(mx, __shfl_xor_sync(mask, mx, o, kLanes));
  }
  if (!live) return;
  float scale, zero;
  qm::Int4Params(mn, mx, &scale, &zero);
  uint32_t packed = 0;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const uint32_t q = qm::AsymCode(f[i], zero, scale, 15.0f);
    packed |= q << (8 * (i / 2) + (i % 2 == 0 ? 4 : 0));
  }
  *reinterpret_cast<uint32_t*>(job.sec.packed + g * (kGroup / 2) + lane * 4) = packed;
  if (lane == 0) {
    StoreF32(job.sec.scales + 4 * g, scale);
    StoreF32(job.sec.zeros + 4 * g, zero);
  }
}

template <typename Dst>
__global__ void __launch_bounds__(kThreads)
    DecodeKernel(DecodeJob<Dst> j0, DecodeJob<Dst> j1, int64_t n, int64_t groups, int n_jobs) {
  const int64_t gid = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kLanes;
  const int lane = threadIdx.x % kLanes;
  if (gid >= n_jobs * groups) return;
  const DecodeJob<Dst> job = gid < groups ? j0 : j1;
  const int64_t g = gid < groups ? gid : gid - groups;
  const int64_t e = g * kGroup + lane * kVec;
  if (e >= n) return;
  const uint32_t packed =
      *reinterpret_cast<const uint32_t*>(job.sec.packed + g * (kGroup / 2) + lane * 4);
  const float scale = LoadF32(job.sec.scales + 4 * g), zero = LoadF32(job.sec.zeros + 4 * g);
  float f[8];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const uint32_t q = (packed >> (8 * (i / 2) + (i % 2 == 0 ? 4 : 0))) & 0xFu;
    f[i] = qm::Dequant(static_cast<float>(q), scale, zero);
  }
  if (uint16_t* y = job.dst(e)) Store16(y, Pack8(f));
}

// Launchers: one or two jobs of n values each (n a multiple of 8).
template <typename Src>
absl::Status LaunchEncode(const EncodeJob<Src>* jobs, int n_jobs, int64_t n,
                          cudaStream_t stream) {
  const int64_t groups = (n + kGroup - 1) / kGroup;
  EncodeKernel<Src><<<BlocksFor(n_jobs * groups * kLanes, kThreads), kThreads, 0, stream>>>(
      jobs[0], jobs[n_jobs - 1], n, groups, n_jobs);
  return LaunchStatus("int4 group encode");
}
template <typename Dst>
absl::Status LaunchDecode(const DecodeJob<Dst>* jobs, int n_jobs, int64_t n,
                          cudaStream_t stream) {
  const int64_t groups = (n + kGroup - 1) / kGroup;
  DecodeKernel<Dst><<<BlocksFor(n_jobs * groups * kLanes, kThreads), kThreads, 0, stream>>>(
      jobs[0], jobs[n_jobs - 1], n, groups, n_jobs);
  return LaunchStatus("int4 group decode");
}

}  // namespace kvs::cuda::int4
