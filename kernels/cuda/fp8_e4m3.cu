// fp8_e4m3 on the GPU: per-layer amax of K and V in one fused reduction pass, then one code pass
// (x / scale_l, then E4M3 round-to-nearest-even with saturation — cvt.rn.satfinite.e4m3x2 where
// the code runs on sm_89 or newer, qm::E4m3FromFloat (format::E4m3FromFloat's integer
// operations) below — or the compat offset-uint8). Decode follows the payload's kFlagFp8Compat,
// as the CPU decoder. Kernels: kernels/cuda/layer_scaled.cu. Layout: kernels/format/fp8_e4m3.h.
#include "kernels/cuda/fp8_e4m3.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/layer_scaled.cuh"
#include "kernels/format/fp8_e4m3.h"

namespace kvs::cuda {
namespace {

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("fp8_e4m3", g, format::Fp8E4m3BodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::Fp8E4m3BodyBytes(g);
}

struct Ws {
  explicit Ws(const KvGeometry& g) : amax(layout.Take(8 * g.layers)) {}
  WorkspaceLayout layout;
  size_t amax;
};
size_t WorkspaceBytes(const KvGeometry& g) { return Ws(g).layout.bytes(); }

absl::Status Encode(const DeviceKv& kv, const CodecOptions& o, DeviceBytes payload,
                    DeviceBytes ws, cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(Fp8E4m3Cuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  const Ws w(g);
  const int64_t n = g.elements();
  const uint8_t flags = o.fp8_compat ? kFlagFp8Compat : 0;
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kFp8E4m3, g, flags, format::Fp8E4m3BodyBytes(g)), payload.data,
      ws.data + w.amax, 8 * g.layers, stream));
  uint8_t* body = payload.data + kPayloadHeaderBytes;
  const LayerTensor t[2] = {{kv.k, body, body + 2 * n},
                            {kv.v, body + n, body + 2 * n + 4 * g.layers}};
  return LaunchLayerEncode(o.fp8_compat ? LayerCode::kFp8Compat : LayerCode::kE4m3, t, 2, g,
                           reinterpret_cast<uint32_t*>(ws.data + w.amax), stream);
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(Fp8E4m3Cuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  const int64_t n = g.elements();
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kFp8E4m3, g, 0, format::Fp8E4m3BodyBytes(g)),
      kFlagFp8Compat, ws, nullptr, 0, keep_mask, g.tokens, stream));
  const uint8_t* body = payload.data + kPayloadHeaderBytes;
  const LayerCodes t[2] = {{body, body + 2 * n, out.k},
                           {body + n, body + 2 * n + 4 * g.layers, out.v}};
  return LaunchLayerDecode(LayerCode::kE4m3, t, 2, g, payload.data, stream);
}

}  // namespace

const CudaCodec& Fp8E4m3Cuda() {
  static constexpr CudaCodec kCodec{CodecId::kFp8E4m3, "fp8_e4m3", CanEncode, EncodedBytes,
                                    WorkspaceBytes,      Encode,     Decode};
  return kCodec;
}

}  // namespace kvs::cuda
