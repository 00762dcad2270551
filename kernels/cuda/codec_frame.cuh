// kernels/cuda/codec_frame.cuh — internal: what every CUDA codec's host side shares — limits,
// argument checks, the payload header (written on encode, checked on the device on decode), the
// workspace layout and the launch status.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_codec.h"
#include "kernels/format/payload.h"

namespace kvs::cuda {

// The workspace opens with the decode status word (kernels/cuda/device_common.cuh DecodeError).
inline constexpr size_t kStatusBytes = 256;
inline constexpr size_t kWsAlign = 256;

// Carves a workspace into 256-byte-aligned regions after the status word.
class WorkspaceLayout {
 public:
  size_t Take(size_t bytes) {
    const size_t at = end_;
    end_ += (bytes + kWsAlign - 1) / kWsAlign * kWsAlign;
    return at;
  }
  size_t bytes() const { return end_; }

 private:
  size_t end_ = kStatusBytes;
};

// The limits every CUDA codec shares: a valid geometry, D a multiple of 8 in [8, 256], a body
// below 4 GiB (the header's u32).
absl::Status CanEncodeCommon(absl::string_view codec, const KvGeometry& g, uint64_t body_bytes);

// Checks the geometry (can_encode), buffer sizes and 16-byte alignment of every pointer.
absl::Status CheckEncodeArgs(const CudaCodec& c, const DeviceKv& kv, DeviceBytes payload,
                             DeviceBytes workspace);
absl::Status CheckDecodeArgs(const CudaCodec& c, ConstDeviceBytes payload,
                             const MutableDeviceKv& out, DeviceBytes workspace);

// The header a CPU codec writes for this payload (dtype fp16).
PayloadHeader MakeHeader(CodecId id, const KvGeometry& g, uint8_t flags, uint64_t body_bytes);

// Encode prologue, one launch: writes `h` at payload[0, 32) and zeroes ws[zero, zero + bytes).
absl::Status LaunchEncodePrologue(const PayloadHeader& h, uint8_t* payload, uint8_t* zero,
                                  size_t zero_bytes, cudaStream_t stream);

// Decode prologue, one launch: checks the payload header against `expected` (any subset of
// allowed_flags may be set), writes the status word, zeroes ws[zero, zero + bytes) and, when
// keep_mask is non-null, fills it with `tokens` ones.
absl::Status LaunchDecodePrologue(const uint8_t* payload, const PayloadHeader& expected,
                                  uint8_t allowed_flags, DeviceBytes workspace, uint8_t* zero,
                                  size_t zero_bytes, uint8_t* keep_mask, int64_t tokens,
                                  cudaStream_t stream);

// The launch error, if any, as a Status naming `what`.
absl::Status LaunchStatus(absl::string_view what);

// Blocks for `items` work items at `per_block` per block.
inline unsigned BlocksFor(int64_t items, int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

}  // namespace kvs::cuda
