// uniform_int8 on the GPU: per-layer amax of K and V in one fused reduction pass (atomicMax per
// block into the workspace), then one code pass over both tensors; decode is one pass. Same fp32
// division and rounding as the CPU codec, so the payload bytes are equal.
// Kernels: kernels/cuda/layer_scaled.cu. Layout: kernels/format/uniform_int8.h.
#include "kernels/cuda/uniform_int8.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/layer_scaled.cuh"
#include "kernels/format/uniform_int8.h"

namespace kvs::cuda {
namespace {

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("uniform_int8", g, format::UniformInt8BodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::UniformInt8BodyBytes(g);
}

struct Ws {
  explicit Ws(const KvGeometry& g) : amax(layout.Take(8 * g.layers)) {}
  WorkspaceLayout layout;
  size_t amax;
};
size_t WorkspaceBytes(const KvGeometry& g) { return Ws(g).layout.bytes(); }

absl::Status Encode(const DeviceKv& kv, const CodecOptions&, DeviceBytes payload, DeviceBytes ws,
                    cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(UniformInt8Cuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  const Ws w(g);
  const int64_t n = g.elements();
  uint8_t* body = payload.data + kPayloadHeaderBytes;
  uint32_t* amax = reinterpret_cast<uint32_t*>(ws.data + w.amax);
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kUniformInt8, g, 0, format::UniformInt8BodyBytes(g)), payload.data,
      ws.data + w.amax, 8 * g.layers, stream));
  const LayerTensor t[2] = {{kv.k, body, body + 2 * n}, {kv.v, body + n, body + 2 * n + 4 * g.layers}};
  return LaunchLayerEncode(LayerCode::kInt8, t, 2, g, amax, stream);
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(UniformInt8Cuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  const int64_t n = g.elements();
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kUniformInt8, g, 0, format::UniformInt8BodyBytes(g)),
      0xFF, ws, nullptr, 0, keep_mask, g.tokens, stream));
  const uint8_t* body = payload.data + kPayloadHeaderBytes;
  const LayerCodes t[2] = {{body, body + 2 * n, out.k}, {body + n, body + 2 * n + 4 * g.layers, out.v}};
  return LaunchLayerDecode(LayerCode::kInt8, t, 2, g, payload.data, stream);
}

}  // namespace

const CudaCodec& UniformInt8Cuda() {
  static constexpr CudaCodec kCodec{CodecId::kUniformInt8, "uniform_int8", CanEncode,
                                    EncodedBytes,          WorkspaceBytes, Encode,
                                    Decode};
  return kCodec;
}

}  // namespace kvs::cuda
