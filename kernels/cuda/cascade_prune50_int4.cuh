// kernels/cuda/cascade_prune50_int4.cuh — cascade_prune50_int4 on the GPU (CODECS.md §2.12):
// top-k token pruning, then grouped INT4 of the kept K and V rows; payload byte for byte the CPU
// codec's (kernels/format/prune.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& CascadePrune50Int4Cuda();

}  // namespace kvs::cuda
