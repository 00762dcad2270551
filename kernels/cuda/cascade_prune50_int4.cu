// cascade_prune50_int4 on the GPU: token selection as topk_prune_50 (kernels/cuda/
// token_select.cu), then one pass that gathers the kept rows straight into the INT4 group kernel
// (kernels/cuda/int4_group.cuh: no staging copy of the kept tensor). Decode: positions checked on
// the device, evicted rows zeroed, INT4 groups decoded and scattered into the kept rows.
// Layout: kernels/format/prune.h.
#include "kernels/cuda/cascade_prune50_int4.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/int4_group.cuh"
#include "kernels/cuda/token_select.cuh"
#include "kernels/format/prune.h"

namespace kvs::cuda {
namespace {

// Kept element e of [L,H,k,D] <-> element of [L,H,S,D] through the kept positions.
struct KeptRows {
  const uint32_t* idx;
  int64_t S, D, keep;
  // Offset in [L,H,S,D] of kept element e (8 consecutive elements stay in one row), or -1 when the
  // position is out of range (a malformed payload; decode then skips the row).
  __device__ int64_t Offset(int64_t e) const {
    const int64_t row = Div64(e, D), slice = Div64(row, keep);
    const uint32_t s = idx[row - slice * keep];
    if (s >= S) return -1;
    return (slice * S + s) * D + (e - row * D);
  }
};
struct GatherSrc {
  const uint16_t* x;
  KeptRows rows;
  __device__ const uint16_t* operator()(int64_t e) const { return x + rows.Offset(e); }
};
struct ScatterDst {
  uint16_t* y;
  KeptRows rows;
  __device__ uint16_t* operator()(int64_t e) const {
    const int64_t at = rows.Offset(e);
    return at < 0 ? nullptr : y + at;
  }
};

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("cascade_prune50_int4", g, format::CascadePruneInt4BodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::CascadePruneInt4BodyBytes(g);
}

struct Ws {
  explicit Ws(const KvGeometry& g) : select(g, layout), pos(layout.Take(4 * g.tokens)) {}
  WorkspaceLayout layout;
  SelectWorkspace select;  // encode
  size_t pos;              // decode: S int32
};
size_t WorkspaceBytes(const KvGeometry& g) { return Ws(g).layout.bytes(); }

KeptRows RowsOf(const KvGeometry& g, const uint32_t* idx) {
  return {idx, g.tokens, g.head_dim, format::PruneKeepCount(g)};
}

absl::Status Encode(const DeviceKv& kv, const CodecOptions& o, DeviceBytes payload,
                    DeviceBytes ws, cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(CascadePrune50Int4Cuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  const Ws w(g);
  const format::CascadeSections sec(g);
  const uint8_t flags = o.prune_fill == PruneFill::kZero ? kFlagPruneZeroFill : 0;
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kCascadePrune50Int4, g, flags, sec.body()), payload.data, nullptr, 0,
      stream));
  uint8_t* b = payload.data + kPayloadHeaderBytes;
  uint32_t* idx = reinterpret_cast<uint32_t*>(b + sec.indices());
  KVS_RETURN_IF_ERROR(LaunchSelectTokens(kv.k, g, ws.data, w.select, idx, stream));
  const int4::EncodeJob<GatherSrc> jobs[2] = {
      {{kv.k, RowsOf(g, idx)}, {b + sec.k_packed(), b + sec.k_scales(), b + sec.k_zeros()}},
      {{kv.v, RowsOf(g, idx)}, {b + sec.v_packed(), b + sec.v_scales(), b + sec.v_zeros()}}};
  return int4::LaunchEncode(jobs, 2, static_cast<int64_t>(format::PruneKeptElements(g)), stream);
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(CascadePrune50Int4Cuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  const Ws w(g);
  const format::CascadeSections sec(g);
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kCascadePrune50Int4, g, 0, sec.body()),
      kFlagPruneZeroFill, ws, ws.data + w.pos, 4 * g.tokens, nullptr, 0, stream));
  const uint8_t* b = payload.data + kPayloadHeaderBytes;
  const uint32_t* idx = reinterpret_cast<const uint32_t*>(b + sec.indices());
  int32_t* pos = reinterpret_cast<int32_t*>(ws.data + w.pos);
  KVS_RETURN_IF_ERROR(
      LaunchCheckPositions(idx, g, pos, reinterpret_cast<uint32_t*>(ws.data), stream));
  KVS_RETURN_IF_ERROR(
      LaunchPlaceRows(pos, nullptr, payload.data, g, out.k, out.v, keep_mask, stream));
  const int4::DecodeJob<ScatterDst> jobs[2] = {
      {{b + sec.k_packed(), b + sec.k_scales(), b + sec.k_zeros()}, {out.k, RowsOf(g, idx)}},
      {{b + sec.v_packed(), b + sec.v_scales(), b + sec.v_zeros()}, {out.v, RowsOf(g, idx)}}};
  return int4::LaunchDecode(jobs, 2, static_cast<int64_t>(format::PruneKeptElements(g)), stream);
}

}  // namespace

const CudaCodec& CascadePrune50Int4Cuda() {
  static constexpr CudaCodec kCodec{CodecId::kCascadePrune50Int4, "cascade_prune50_int4",
                                    CanEncode,                    EncodedBytes,
                                    WorkspaceBytes,               Encode,
                                    Decode};
  return kCodec;
}

}  // namespace kvs::cuda
