// Per-layer scaled 8-bit codes on the GPU; interface and semantics in layer_scaled.cuh.
#include "kernels/cuda/layer_scaled.cuh"

#include <cuda_fp8.h>

#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/device_common.cuh"
#include "kernels/format/payload.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kVecsPerThread = 4;
constexpr int64_t kBlockElems = int64_t{kThreads} * kVecsPerThread * kVec;  // 8192

struct EncodeParams {
  LayerTensor t[2];
  int64_t le;                // elements per layer, a multiple of 8
  int64_t blocks_per_layer;  // ⌈le / kBlockElems⌉
  int64_t layers;
  float range;
  uint32_t* amax;  // [tensor · L + l], fp16 bits of max |x|
};
struct DecodeParams {
  LayerCodes t[2];
  int64_t le, blocks_per_layer, layers;
  const uint8_t* header;  // the payload header (fp8: its flags byte picks E4M3 or compat)
};

// Which (tensor, layer) and which chunk of it this block covers.
struct BlockSpan {
  int t;
  int64_t l, tl, base;
};
__device__ __forceinline__ BlockSpan SpanOf(int64_t blocks_per_layer, int64_t layers) {
  BlockSpan s;
  s.tl = blockIdx.x / blocks_per_layer;
  s.base = (blockIdx.x % blocks_per_layer) * kBlockElems;
  s.t = static_cast<int>(s.tl / layers);
  s.l = s.tl % layers;
  return s;
}
__device__ __forceinline__ int64_t VecIndex(const BlockSpan& s, int k) {
  return s.base + (static_cast<int64_t>(k) * kThreads + threadIdx.x) * kVec;
}

__device__ uint32_t BlockMax(uint32_t m) {
  __shared__ uint32_t warp_max[kThreads / 32];
  m = GroupMax(m, 32);
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    m = threadIdx.x < kThreads / 32 ? warp_max[threadIdx.x] : 0;
    m = GroupMax(m, 32);
  }
  return m;  // valid in thread 0
}

__global__ void __launch_bounds__(kThreads) AmaxKernel(EncodeParams p) {
  const BlockSpan s = SpanOf(p.blocks_per_layer, p.layers);
  const uint16_t* x = (s.t == 0 ? p.t[0].x : p.t[1].x) + s.l * p.le;
  uint32_t m = 0;
#pragma unroll
  for (int k = 0; k < kVecsPerThread; ++k) {
    const int64_t i = VecIndex(s, k);
    if (i < p.le) m = max(m, AbsMaxBits8(Load16(x + i)));
  }
  m = BlockMax(m);
  if (threadIdx.x == 0 && m != 0) atomicMax(&p.amax[s.tl], m);
}

// Two E4M3 codes (a in the low byte).
template <LayerCode C>
__device__ __forceinline__ uint32_t E4m3Pair(float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if constexpr (C == LayerCode::kE4m3) {
    return __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
  }
#endif
  return qm::E4m3FromFloat(a) | static_cast<uint32_t>(qm::E4m3FromFloat(b)) << 8;
}

// 8 codes of f[0..8) / scale, little-endian in two words.
template <LayerCode C>
__device__ __forceinline__ uint2 Codes8(const float f[8], float scale) {
  uint32_t w[2] = {0, 0};
#pragma unroll
  for (int j = 0; j < kVec; j += 2) {
    uint32_t pair;
    if constexpr (C == LayerCode::kInt8) {
      pair = static_cast<uint8_t>(qm::Int8Code(f[j], scale)) |
             static_cast<uint32_t>(static_cast<uint8_t>(qm::Int8Code(f[j + 1], scale))) << 8;
    } else if constexpr (C == LayerCode::kFp8Compat) {
      pair = qm::CompatCode(f[j], scale) | static_cast<uint32_t>(qm::CompatCode(f[j + 1], scale)) << 8;
    } else {
      pair = E4m3Pair<C>(qm::Div(f[j], scale), qm::Div(f[j + 1], scale));
    }
    w[j / 4] |= pair << (8 * (j % 4));
  }
  return make_uint2(w[0], w[1]);
}

template <LayerCode C>
__global__ void __launch_bounds__(kThreads) CodeKernel(EncodeParams p) {
  const BlockSpan s = SpanOf(p.blocks_per_layer, p.layers);
  const LayerTensor t = s.t == 0 ? p.t[0] : p.t[1];  // by value: no local copy of p
  const float scale =
      qm::LayerScale(qm::HalfToFloat(static_cast<uint16_t>(p.amax[s.tl])), p.range);
  if (s.base == 0 && threadIdx.x == 0) StoreF32(t.scales + 4 * s.l, scale);
  const uint16_t* x = t.x + s.l * p.le;
  uint8_t* q = t.codes + s.l * p.le;
#pragma unroll
  for (int k = 0; k < kVecsPerThread; ++k) {
    const int64_t i = VecIndex(s, k);
    if (i < p.le) {
      float f[8];
      Unpack8(Load16(x + i), f);
      *reinterpret_cast<uint2*>(q + i) = Codes8<C>(f, scale);
    }
  }
}

template <bool kFp8>
__device__ __forceinline__ float Value(uint32_t c, bool compat) {
  if constexpr (!kFp8) {
    return static_cast<float>(static_cast<int8_t>(c));
  } else {
    return compat ? static_cast<float>(static_cast<int>(c) - 128)
                  : qm::E4m3ToFloat(static_cast<uint8_t>(c));
  }
}

template <bool kFp8>
__global__ void __launch_bounds__(kThreads) DecodeKernel(DecodeParams p) {
  const BlockSpan s = SpanOf(p.blocks_per_layer, p.layers);
  const LayerCodes t = s.t == 0 ? p.t[0] : p.t[1];
  const bool compat = kFp8 && (p.header[7] & kFlagFp8Compat) != 0;
  const float scale = LoadF32(t.scales + 4 * s.l);
  const uint8_t* q = t.codes + s.l * p.le;
  uint16_t* y = t.out + s.l * p.le;
#pragma unroll
  for (int k = 0; k < kVecsPerThread; ++k) {
    const int64_t i = VecIndex(s, k);
    if (i < p.le) {
      const uint2 c = *reinterpret_cast<const uint2*>(q + i);
      float f[8];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        f[j] = qm::Mul(Value<kFp8>(((j < 4 ? c.x : c.y) >> (8 * (j % 4))) & 0xFFu, compat), scale);
      }
      Store16(y + i, Pack8(f));
    }
  }
}

float RangeOf(LayerCode code) {
  switch (code) {
    case LayerCode::kInt8:
      return qm::kInt8Qmax;
    case LayerCode::kFp8Compat:
      return qm::kFp8CompatRange;
    default:
      return qm::kE4m3Max;
  }
}

}  // namespace

absl::Status LaunchLayerEncode(LayerCode code, const LayerTensor* tensors, int n,
                               const KvGeometry& g, uint32_t* amax, cudaStream_t stream) {
  EncodeParams p{};
  for (int i = 0; i < n; ++i) p.t[i] = tensors[i];
  p.le = g.layer_elements();
  p.blocks_per_layer = (p.le + kBlockElems - 1) / kBlockElems;
  p.layers = g.layers;
  p.range = RangeOf(code);
  p.amax = amax;
  const unsigned blocks = static_cast<unsigned>(n * g.layers * p.blocks_per_layer);
  AmaxKernel<<<blocks, kThreads, 0, stream>>>(p);
  switch (code) {
    case LayerCode::kInt8:
      CodeKernel<LayerCode::kInt8><<<blocks, kThreads, 0, stream>>>(p);
      break;
    case LayerCode::kE4m3:
      CodeKernel<LayerCode::kE4m3><<<blocks, kThreads, 0, stream>>>(p);
      break;
    case LayerCode::kE4m3Emulated:
      CodeKernel<LayerCode::kE4m3Emulated><<<blocks, kThreads, 0, stream>>>(p);
      break;
    case LayerCode::kFp8Compat:
      CodeKernel<LayerCode::kFp8Compat><<<blocks, kThreads, 0, stream>>>(p);
      break;
  }
  return LaunchStatus("per-layer 8-bit encode");
}

absl::Status LaunchLayerDecode(LayerCode code, const LayerCodes* tensors, int n,
                               const KvGeometry& g, const uint8_t* payload, cudaStream_t stream) {
  DecodeParams p{};
  for (int i = 0; i < n; ++i) p.t[i] = tensors[i];
  p.le = g.layer_elements();
  p.blocks_per_layer = (p.le + kBlockElems - 1) / kBlockElems;
  p.layers = g.layers;
  p.header = payload;
  const unsigned blocks = static_cast<unsigned>(n * g.layers * p.blocks_per_layer);
  if (code == LayerCode::kInt8) {
    DecodeKernel<false><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    DecodeKernel<true><<<blocks, kThreads, 0, stream>>>(p);
  }
  return LaunchStatus("per-layer 8-bit decode");
}

}  // namespace kvs::cuda
