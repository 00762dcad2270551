#include "bench/cuda/synth_kv.cuh"

#include <cuda_fp16.h>

#include "common/cuda/cuda_util.h"

namespace kvs::bench {
namespace {

__device__ __forceinline__ uint64_t Mix(uint64_t x) {  // splitmix64
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__global__ void FillKernel(uint16_t* k, uint16_t* v, int64_t n, int64_t D, int64_t le,
                           uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t layer = i / le, d = i % D;
    const float scale = (0.5f + 1.5f * static_cast<float>(Mix(seed ^ layer) >> 40) / 16777216.0f) *
                        (d % 37 == 0 ? 6.0f : 1.0f);
    for (int t = 0; t < 2; ++t) {
      const uint64_t h = Mix(seed + 2 * static_cast<uint64_t>(i) + t);
      const float u1 = (static_cast<float>(h >> 40) + 1.0f) / 16777217.0f;
      const float u2 = static_cast<float>(h & 0xFFFFFF) / 16777216.0f;
      const float z = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);  // Box-Muller
      (t == 0 ? k : v)[i] = __half_as_ushort(__float2half_rn(z * scale));
    }
  }
}

}  // namespace

absl::Status FillSyntheticKv(uint16_t* k, uint16_t* v, const KvGeometry& g, uint64_t seed,
                             cudaStream_t stream) {
  FillKernel<<<4096, 256, 0, stream>>>(k, v, g.elements(), g.head_dim, g.layer_elements(), seed);
  return CudaStatus(cudaGetLastError(), "synthetic KV fill");
}

}  // namespace kvs::bench
