// kernels/cuda/mixed_k8v4.cuh — mixed_k8v4 on the GPU (CODECS.md §2.14): keys as uniform_int8,
// values as uniform_int4; payload byte for byte the CPU codec's (kernels/format/mixed_k8v4.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& MixedK8V4Cuda();

}  // namespace kvs::cuda
