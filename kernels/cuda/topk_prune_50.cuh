// kernels/cuda/topk_prune_50.cuh — topk_prune_50 on the GPU (CODECS.md §2.11): keep the half of
// the tokens with the largest mean key norm, K and V rows bit-exact; payload byte for byte the CPU
// codec's (kernels/format/prune.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& TopkPrune50Cuda();

}  // namespace kvs::cuda
