// kernels/cuda/fp8_e4m3.cuh — fp8_e4m3 on the GPU (CODECS.md §0, §2.4): per-layer scaled real
// FP8 E4M3 (hardware conversion on sm_89+, an integer emulation below, the same codes), or with
// CodecOptions::fp8_compat the reference CPU path's offset-uint8; payload byte for byte the CPU
// codec's (kernels/format/fp8_e4m3.h).
#pragma once

#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

const CudaCodec& Fp8E4m3Cuda();

}  // namespace kvs::cuda
