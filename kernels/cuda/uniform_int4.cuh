// kernels/cuda/uniform_int4.cuh — uniform_int4 on the GPU (CODECS.md §2.6): grouped asymmetric
// INT4, groups of 128 consecutive values, payload byte for byte the CPU codec's
// (kernels/format/uniform_int4.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& UniformInt4Cuda();

}  // namespace kvs::cuda
