// mixed_k8v4 on the GPU: keys by the per-layer INT8 kernels (amax pass + code pass,
// kernels/cuda/layer_scaled.cu), values by the group-local INT4 kernel (kernels/cuda/
// int4_group.cuh); decode is one pass each. Layout: kernels/format/mixed_k8v4.h:
// Kq ‖ Vpacked ‖ Vscales ‖ Vzeros ‖ Ks.
#include "kernels/cuda/mixed_k8v4.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/int4_group.cuh"
#include "kernels/cuda/layer_scaled.cuh"
#include "kernels/format/mixed_k8v4.h"

namespace kvs::cuda {
namespace {

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("mixed_k8v4", g, format::MixedK8V4BodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::MixedK8V4BodyBytes(g);
}

struct Ws {
  explicit Ws(const KvGeometry& g) : amax(layout.Take(4 * g.layers)) {}
  WorkspaceLayout layout;
  size_t amax;
};
size_t WorkspaceBytes(const KvGeometry& g) { return Ws(g).layout.bytes(); }

template <typename Byte>
struct Sections {
  Sections(Byte* body, const KvGeometry& g) {
    const uint64_t n = static_cast<uint64_t>(g.elements());
    const uint64_t groups = format::Int4Groups(n);
    kq = body;
    vpacked = body + n;
    vscales = vpacked + format::Int4PackedBytes(n);
    vzeros = vscales + 4 * groups;
    kscales = vzeros + 4 * groups;
  }
  Byte *kq, *vpacked, *vscales, *vzeros, *kscales;
};

absl::Status Encode(const DeviceKv& kv, const CodecOptions&, DeviceBytes payload, DeviceBytes ws,
                    cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(MixedK8V4Cuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  const Ws w(g);
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kMixedK8V4, g, 0, format::MixedK8V4BodyBytes(g)), payload.data,
      ws.data + w.amax, 4 * g.layers, stream));
  const Sections<uint8_t> s(payload.data + kPayloadHeaderBytes, g);
  const LayerTensor k{kv.k, s.kq, s.kscales};
  KVS_RETURN_IF_ERROR(LaunchLayerEncode(LayerCode::kInt8, &k, 1, g,
                                        reinterpret_cast<uint32_t*>(ws.data + w.amax), stream));
  const int4::EncodeJob<int4::Contiguous> v{{kv.v}, {s.vpacked, s.vscales, s.vzeros}};
  return int4::LaunchEncode(&v, 1, g.elements(), stream);
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(MixedK8V4Cuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kMixedK8V4, g, 0, format::MixedK8V4BodyBytes(g)), 0xFF,
      ws, nullptr, 0, keep_mask, g.tokens, stream));
  const Sections<const uint8_t> s(payload.data + kPayloadHeaderBytes, g);
  const LayerCodes k{s.kq, s.kscales, out.k};
  KVS_RETURN_IF_ERROR(LaunchLayerDecode(LayerCode::kInt8, &k, 1, g, payload.data, stream));
  const int4::DecodeJob<int4::ContiguousOut> v{{s.vpacked, s.vscales, s.vzeros}, {out.v}};
  return int4::LaunchDecode(&v, 1, g.elements(), stream);
}

}  // namespace

const CudaCodec& MixedK8V4Cuda() {
  static constexpr CudaCodec kCodec{CodecId::kMixedK8V4, "mixed_k8v4", CanEncode, EncodedBytes,
                                    WorkspaceBytes,        Encode,       Decode};
  return kCodec;
}

}  // namespace kvs::cuda
