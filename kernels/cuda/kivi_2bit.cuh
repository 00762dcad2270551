// kernels/cuda/kivi_2bit.cuh — kivi_2bit on the GPU (CODECS.md §2.7): asymmetric 2-bit, keys per
// (layer, head, channel) over all tokens, values per token; payload byte for byte the CPU
// codec's (kernels/format/kivi_2bit.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& Kivi2BitCuda();

}  // namespace kvs::cuda
