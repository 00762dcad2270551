// kernels/cuda/cachegen.cuh — cachegen on the GPU (CODECS.md §2.9): per chunk of 10 tokens an
// 8-bit anchor and 4-bit deltas against it; payload byte for byte the CPU codec's
// (kernels/format/cachegen.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& CachegenCuda();

}  // namespace kvs::cuda
