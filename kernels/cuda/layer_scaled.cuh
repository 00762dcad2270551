// kernels/cuda/layer_scaled.cuh — internal: per-layer scaled 8-bit codes on the GPU, the kernels
// behind uniform_int8 (K and V), mixed_k8v4 (K) and fp8_e4m3 (both modes); the CUDA side of
// kernels/cpu/int8_layer.h.
//
// Encode, per tensor of [L, H, S, D] fp16 and layer l: amax_l = max |x| over the layer (first
// pass: every block reduces its 8192 values and does one atomicMax into amax[], no host round
// trip), then scale_l = amax_l / range (1 when 0) and code = f(x / scale_l) (second pass, one
// 16-byte load and one 8-byte store per thread and vector). Decode is one pass, code -> fp16.
// Payload bytes equal the CPU codecs' (same fp32 division and rounding).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/tensor/kv.h"
#include "kernels/cuda/cuda_codec.h"

namespace kvs::cuda {

enum class LayerCode {
  kInt8,          // clip(rint(x / scale), -127, 127), range 127
  kE4m3,          // float8_e4m3fn, range 448: hardware conversion on sm_89+, emulated below
  kE4m3Emulated,  // the same codes, always by the integer emulation (tests compare the two)
  kFp8Compat,     // clip(rint(x / scale + 128), 0, 255), range 240
};

// One tensor's sections: its codes (N bytes) and its per-layer f32 scales (L, maybe unaligned).
struct LayerTensor {
  const uint16_t* x;
  uint8_t* codes;
  uint8_t* scales;
};
struct LayerCodes {
  const uint8_t* codes;
  const uint8_t* scales;
  uint16_t* out;
};

// amax: n·L u32 of workspace, zeroed before (the codec's prologue does it). n is 1 or 2.
absl::Status LaunchLayerEncode(LayerCode code, const LayerTensor* tensors, int n,
                               const KvGeometry& g, uint32_t* amax, cudaStream_t stream);
// kInt8, or any fp8 code: fp8 payloads decode as E4M3 or compat by the kFlagFp8Compat bit of the
// header at `payload` (read on the device, as the CPU decoder follows the payload's flag).
absl::Status LaunchLayerDecode(LayerCode code, const LayerCodes* tensors, int n,
                               const KvGeometry& g, const uint8_t* payload, cudaStream_t stream);

}  // namespace kvs::cuda
