// kernels/cuda/kvquant_2bit.cuh — kvquant_2bit on the GPU (CODECS.md §2.8): fp16 outlier
// channels plus per-layer asymmetric 2-bit; payload byte for byte the CPU codec's
// (kernels/format/kvquant_2bit.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& Kvquant2BitCuda();

}  // namespace kvs::cuda
