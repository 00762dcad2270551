// uniform_int4 on the GPU: one group-local pass over K and V together (a half-warp per group of
// 128 values, kernels/cuda/int4_group.cuh); decode is one pass. Same fp32 arithmetic as the CPU
// codec, so the payload bytes are equal. Layout: kernels/format/uniform_int4.h.
#include "kernels/cuda/uniform_int4.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/int4_group.cuh"
#include "kernels/format/uniform_int4.h"

namespace kvs::cuda {
namespace {

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("uniform_int4", g, format::UniformInt4BodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::UniformInt4BodyBytes(g);
}
size_t WorkspaceBytes(const KvGeometry&) { return WorkspaceLayout().bytes(); }

// Kpacked ‖ Vpacked ‖ Kscales ‖ Vscales ‖ Kzeros ‖ Vzeros.
template <typename Byte>
void SectionsOf(Byte* body, const KvGeometry& g, Byte* out[6]) {
  const uint64_t n = static_cast<uint64_t>(g.elements());
  const uint64_t packed = format::Int4PackedBytes(n), groups = format::Int4Groups(n);
  const uint64_t at[6] = {0, packed, 2 * packed, 2 * packed + 4 * groups,
                          2 * packed + 8 * groups, 2 * packed + 12 * groups};
  for (int i = 0; i < 6; ++i) out[i] = body + at[i];
}

absl::Status Encode(const DeviceKv& kv, const CodecOptions&, DeviceBytes payload, DeviceBytes ws,
                    cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(UniformInt4Cuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kUniformInt4, g, 0, format::UniformInt4BodyBytes(g)), payload.data,
      nullptr, 0, stream));
  uint8_t* s[6];
  SectionsOf(payload.data + kPayloadHeaderBytes, g, s);
  const int4::EncodeJob<int4::Contiguous> jobs[2] = {{{kv.k}, {s[0], s[2], s[4]}},
                                                     {{kv.v}, {s[1], s[3], s[5]}}};
  return int4::LaunchEncode(jobs, 2, g.elements(), stream);
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(UniformInt4Cuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kUniformInt4, g, 0, format::UniformInt4BodyBytes(g)),
      0xFF, ws, nullptr, 0, keep_mask, g.tokens, stream));
  const uint8_t* s[6];
  SectionsOf(payload.data + kPayloadHeaderBytes, g, s);
  const int4::DecodeJob<int4::ContiguousOut> jobs[2] = {{{s[0], s[2], s[4]}, {out.k}},
                                                        {{s[1], s[3], s[5]}, {out.v}}};
  return int4::LaunchDecode(jobs, 2, g.elements(), stream);
}

}  // namespace

const CudaCodec& UniformInt4Cuda() {
  static constexpr CudaCodec kCodec{CodecId::kUniformInt4, "uniform_int4", CanEncode,
                                    EncodedBytes,          WorkspaceBytes, Encode,
                                    Decode};
  return kCodec;
}

}  // namespace kvs::cuda
