// The table of CUDA codecs (kernels/cuda/cuda_codec.h).
#include "kernels/cuda/cuda_codec.h"
#include "kernels/cuda/cachegen.cuh"
#include "kernels/cuda/cascade_prune50_int4.cuh"
#include "kernels/cuda/fp8_e4m3.cuh"
#include "kernels/cuda/kivi_2bit.cuh"
#include "kernels/cuda/kvquant_2bit.cuh"
#include "kernels/cuda/mixed_k8v4.cuh"
#include "kernels/cuda/topk_prune_50.cuh"
#include "kernels/cuda/uniform_int4.cuh"
#include "kernels/cuda/uniform_int8.cuh"

namespace kvs::cuda {

absl::Span<const CudaCodec* const> CudaCodecs() {
  static const CudaCodec* const kAll[] = {
      &CachegenCuda(),    &CascadePrune50Int4Cuda(), &Fp8E4m3Cuda(),     &Kivi2BitCuda(),
      &Kvquant2BitCuda(), &MixedK8V4Cuda(),          &TopkPrune50Cuda(), &UniformInt4Cuda(),
      &UniformInt8Cuda(),
  };
  return kAll;
}

const CudaCodec* FindCudaCodec(absl::string_view name) {
  for (const CudaCodec* c : CudaCodecs()) {
    if (c->name == name) return c;
  }
  return nullptr;
}

}  // namespace kvs::cuda
