// kernels/cuda/uniform_int8.cuh — uniform_int8 on the GPU (CODECS.md §2.5): per-layer symmetric
// INT8, payload byte for byte the CPU codec's (kernels/format/uniform_int8.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& UniformInt8Cuda();

}  // namespace kvs::cuda
