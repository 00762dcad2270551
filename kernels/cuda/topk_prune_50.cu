// topk_prune_50 on the GPU: token selection (kernels/cuda/token_select.cu: one pass over K for
// the row norms, the per-token sums in the CPU's order, one block for the radix select that
// writes the kept positions into the payload), then one gather pass copying the kept K and V rows
// with 16-byte vectors. Decode checks the positions on the device and writes every output row
// once (kept rows copied, evicted rows zeroed), with keep_mask as the CPU codec reports it.
// Layout: kernels/format/prune.h.
#include "kernels/cuda/topk_prune_50.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/token_select.cuh"
#include "kernels/format/prune.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 256;

struct GatherShape {
  int64_t S, slices, keep, D, vecs, vectors;  // vectors = 2·L·H·k·D/8
};

__global__ void __launch_bounds__(kThreads) GatherKernel(const uint16_t* k, const uint16_t* v,
                                                         const uint32_t* idx, GatherShape p,
                                                         uint16_t* kept) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= p.vectors) return;
  const int64_t row = Div64(i, p.vecs), c = i - row * p.vecs;
  const int64_t slice = Div64(row, p.keep), j = row - slice * p.keep;
  const bool is_v = slice >= p.slices;
  const uint16_t* x = (is_v ? v : k) + ((slice - (is_v ? p.slices : 0)) * p.S + idx[j]) * p.D;
  Store16(kept + row * p.D + c * kVec, Load16(x + c * kVec));
}

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("topk_prune_50", g, format::TopkPruneBodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::TopkPruneBodyBytes(g);
}

struct Ws {
  explicit Ws(const KvGeometry& g) : select(g, layout), pos(layout.Take(4 * g.tokens)) {}
  WorkspaceLayout layout;
  SelectWorkspace select;  // encode
  size_t pos;              // decode: S int32
};
size_t WorkspaceBytes(const KvGeometry& g) { return Ws(g).layout.bytes(); }

absl::Status Encode(const DeviceKv& kv, const CodecOptions& o, DeviceBytes payload,
                    DeviceBytes ws, cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(TopkPrune50Cuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  const Ws w(g);
  const uint8_t flags = o.prune_fill == PruneFill::kZero ? kFlagPruneZeroFill : 0;
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kTopkPrune50, g, flags, format::TopkPruneBodyBytes(g)), payload.data,
      nullptr, 0, stream));
  uint8_t* body = payload.data + kPayloadHeaderBytes;
  uint32_t* idx = reinterpret_cast<uint32_t*>(body + 4 * format::PruneKeptElements(g));
  KVS_RETURN_IF_ERROR(LaunchSelectTokens(kv.k, g, ws.data, w.select, idx, stream));
  GatherShape p;
  p.S = g.tokens;
  p.slices = g.layers * g.heads;
  p.keep = format::PruneKeepCount(g);
  p.D = g.head_dim;
  p.vecs = g.head_dim / kVec;
  p.vectors = 2 * p.slices * p.keep * p.vecs;
  GatherKernel<<<BlocksFor(p.vectors, kThreads), kThreads, 0, stream>>>(
      kv.k, kv.v, idx, p, reinterpret_cast<uint16_t*>(body));
  return LaunchStatus("topk_prune_50 gather");
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(TopkPrune50Cuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  const Ws w(g);
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kTopkPrune50, g, 0, format::TopkPruneBodyBytes(g)),
      kFlagPruneZeroFill, ws, ws.data + w.pos, 4 * g.tokens, nullptr, 0, stream));
  const uint8_t* body = payload.data + kPayloadHeaderBytes;
  int32_t* pos = reinterpret_cast<int32_t*>(ws.data + w.pos);
  KVS_RETURN_IF_ERROR(LaunchCheckPositions(
      reinterpret_cast<const uint32_t*>(body + 4 * format::PruneKeptElements(g)), g, pos,
      reinterpret_cast<uint32_t*>(ws.data), stream));
  return LaunchPlaceRows(pos, reinterpret_cast<const uint16_t*>(body), payload.data, g, out.k,
                         out.v, keep_mask, stream);
}

}  // namespace

const CudaCodec& TopkPrune50Cuda() {
  static constexpr CudaCodec kCodec{CodecId::kTopkPrune50, "topk_prune_50", CanEncode,
                                    EncodedBytes,          WorkspaceBytes,  Encode,
                                    Decode};
  return kCodec;
}

}  // namespace kvs::cuda
