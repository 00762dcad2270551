// kernels/cuda/cuda_codec.h — the host API of kvshuttle's CUDA codecs (built with KVS_WITH_CUDA).
//
// A CUDA codec encodes K and V that live in device memory into a payload in device memory, byte
// for byte the payload the CPU codec of the same name writes (kernels/format/<codec>.h), and
// decodes such a payload — from either side — into device memory. The shape is CUTLASS/CUB's:
// CanEncode -> EncodedBytes / WorkspaceBytes -> Encode / Decode on the caller's stream. Kernels
// never allocate and never synchronise; launchers return a Status (argument errors, launch
// failures) and never abort.
//
//   const kvs::cuda::CudaCodec* codec = kvs::cuda::FindCudaCodec("uniform_int8");
//   KVS_RETURN_IF_ERROR(codec->can_encode(g));
//   // payload: codec->encoded_bytes(g) device bytes; ws: codec->workspace_bytes(g) device bytes
//   KVS_RETURN_IF_ERROR(codec->encode(kv, options, payload, ws, stream));
//   KVS_RETURN_IF_ERROR(codec->decode(payload, out, ws, stream, /*keep_mask=*/nullptr));
//   KVS_RETURN_IF_ERROR(kvs::cuda::DecodeStatus(ws, stream));  // syncs: was the payload valid?
//
// Decoding validates on the device: header (magic, version, codec, dtype, geometry, body length,
// flags) and every data-dependent field (cachegen record headers, kvquant section lengths and
// channel lists, pruning positions). A malformed payload never makes a kernel read or write out
// of bounds; it sets bits in a status word at the start of the workspace that DecodeStatus turns
// into InvalidArgument (the decoded tensors are then unspecified). DecodeStatus is the only call
// here that waits for the device; a pipeline reads the word whenever it synchronises anyway.
//
// Limits of the CUDA kernels (CanEncode says which was hit; the CPU codecs take everything):
// head_dim a multiple of 8 in [8, 256]; K, V, payload and workspace 16-byte aligned; fp16 input.
//
// Thread-safety: the table is immutable; calls on distinct buffers may run concurrently.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/kv.h"
#include "kernels/codec.h"

namespace kvs::cuda {

// K and V, fp16 [L, H, S, D] each, in device memory.
struct DeviceKv {
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  KvGeometry geom;
};
struct MutableDeviceKv {
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
  KvGeometry geom;
  operator DeviceKv() const { return {k, v, geom}; }
};

// A range of device memory.
struct DeviceBytes {
  uint8_t* data = nullptr;
  size_t size = 0;
};
struct ConstDeviceBytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
  ConstDeviceBytes() = default;
  ConstDeviceBytes(const uint8_t* d, size_t n) : data(d), size(n) {}
  ConstDeviceBytes(DeviceBytes b) : data(b.data), size(b.size) {}  // NOLINT: implicit on purpose
};

struct CudaCodec {
  CodecId id;
  absl::string_view name;  // the CPU codec's registry name
  // OK when the kernels take geometry g (see the limits above).
  absl::Status (*can_encode)(const KvGeometry& g);
  // Exact payload bytes (32-byte header + body), as the CPU codec's MaxEncodedBytes.
  uint64_t (*encoded_bytes)(const KvGeometry& g);
  // Device scratch for Encode and for Decode (the larger of the two), 16-byte aligned.
  size_t (*workspace_bytes)(const KvGeometry& g);
  // Encodes kv into payload[0, encoded_bytes(g)). Options: fp8_compat, prune_fill (path is the
  // CPU's choice and is ignored).
  absl::Status (*encode)(const DeviceKv& kv, const CodecOptions& options, DeviceBytes payload,
                         DeviceBytes workspace, cudaStream_t stream);
  // Decodes payload (exactly encoded_bytes(out.geom) bytes) into out. keep_mask: null, or S
  // device bytes that receive 1 for every position carrying data and 0 for a position a pruning
  // codec evicted (PruneFill::kMask payloads only), as Codec::Decode.
  absl::Status (*decode)(ConstDeviceBytes payload, const MutableDeviceKv& out,
                         DeviceBytes workspace, cudaStream_t stream, uint8_t* keep_mask);
};

// Every CUDA codec, in registry-name order.
absl::Span<const CudaCodec* const> CudaCodecs();
// The CUDA codec of that registry name, or null.
const CudaCodec* FindCudaCodec(absl::string_view name);

// Waits for `stream` and reports the last decode's device-side validation, run on this
// workspace: OK, or InvalidArgument naming what was malformed.
absl::Status DecodeStatus(DeviceBytes workspace, cudaStream_t stream);

}  // namespace kvs::cuda
