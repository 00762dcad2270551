// cachegen on the GPU: chunk-local and one pass. A group of D/8 lanes (rounded up to a power of
// two) owns one chunk of one (layer, head) slice, K or V; each lane holds 8 channels. The anchor
// row is loaded and reduced (min/max by shuffles), the chunk's other rows stay in registers as
// raw fp16 while their deltas' min/max is reduced, then anchor codes (8 bytes per lane), delta
// codes (4 bytes per lane and row) and the chunk's params (lane 0) are stored; the group of chunk
// 0 also writes the record header. Decode mirrors it and checks every record header on the
// device. Same fp32 arithmetic as the CPU codec, so the payload bytes are equal.
// Layout: kernels/format/cachegen.h.
#include "kernels/cuda/cachegen.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/device_common.cuh"
#include "kernels/format/cachegen.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = format::kCachegenChunk;
constexpr float kAnchorQmax = format::kCachegenAnchorQmax;
constexpr float kDeltaQmax = format::kCachegenDeltaQmax;

struct Shape {
  explicit Shape(const KvGeometry& g)
      : S(g.tokens), D(static_cast<int>(g.head_dim)), vecs(D / kVec), P(Pow2AtLeast(vecs)),
        C(format::CachegenChunks(g.tokens)), slices(g.layers * g.heads),
        tasks(2 * slices * C) {
    const format::CachegenRecord r = format::CachegenRecordLayout(g);
    anchor_bytes = r.anchor_bytes;
    delta_bytes = r.delta_bytes;
    param_floats = r.param_floats;
    record = r.total;
  }
  int64_t S;
  int D, vecs, P;
  int64_t C, slices, tasks;
  uint64_t anchor_bytes, delta_bytes, param_floats, record;
};

// Where chunk c of record i lives.
template <typename Byte>
struct Chunk {
  __device__ Chunk(Byte* body, const Shape& sh, int64_t task) {
    const int64_t i = task / sh.C;  // record: K slices, then V slices
    c = task % sh.C;
    start = c * kChunk;
    len = static_cast<int>(min(static_cast<int64_t>(kChunk), sh.S - start));
    header = body + i * sh.record;
    anchors = header + 12 + c * sh.D;
    deltas = header + 12 + sh.anchor_bytes + (start - c) * sh.D / 2;
    params = header + 12 + sh.anchor_bytes + sh.delta_bytes + 16 * c;
    tensor = static_cast<int>(i / sh.slices);
    slice_elem = (i % sh.slices) * sh.S * sh.D;
  }
  int64_t c, start, slice_elem;
  int len, tensor;
  Byte *header, *anchors, *deltas, *params;
};

__device__ __forceinline__ void GroupMinMax(float* mn, float* mx, int width) {
  for (int o = width / 2; o > 0; o /= 2) {
    *mn = fminf(*mn, __shfl_xor_sync(0xFFFFFFFFu, *mn, o, width));
    *mx = fmaxf(*mx, __shfl_xor_sync(0xFFFFFFFFu, *mx, o, width));
  }
}

__global__ void __launch_bounds__(kThreads) EncodeKernel(const uint16_t* k, const uint16_t* v,
                                                         Shape sh, uint8_t* body) {
  const int64_t task = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / sh.P;
  const int lane = threadIdx.x % sh.P;
  const bool live = task < sh.tasks;
  const bool active = live && lane < sh.vecs;
  const Chunk<uint8_t> ch(body, sh, live ? task : 0);
  const uint16_t* x = (ch.tensor == 0 ? k : v) + ch.slice_elem + ch.start * sh.D + lane * kVec;

  // Anchor: its own 8-bit range over the D channels.
  float a[8];
  float mn = INFINITY, mx = -INFINITY;
  if (active) {
    Unpack8(Load16(x), a);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      mn = fminf(mn, a[i]);
      mx = fmaxf(mx, a[i]);
    }
  }
  GroupMinMax(&mn, &mx, sh.P);
  float a_scale, a_zero;
  qm::RangeParams(mn, mx, kAnchorQmax, &a_scale, &a_zero);

  // Deltas against the unquantised anchor share one 4-bit range over the chunk.
  uint4 rows[kChunk - 1];
  mn = INFINITY;
  mx = -INFINITY;
#pragma unroll
  for (int t = 1; t < kChunk; ++t) {
    if (active && t < ch.len) {
      rows[t - 1] = Load16(x + t * sh.D);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const float d = qm::Sub(qm::HalfToFloat(Elem(rows[t - 1], i)), a[i]);
        mn = fminf(mn, d);
        mx = fmaxf(mx, d);
      }
    }
  }
  GroupMinMax(&mn, &mx, sh.P);
  if (!active) return;
  float d_scale = 1.0f, d_zero = 0.0f;
  if (ch.len > 1) qm::RangeParams(mn, mx, kDeltaQmax, &d_scale, &d_zero);

  uint32_t w[2] = {0, 0};
#pragma unroll
  for (int i = 0; i < kVec; ++i) w[i / 4] |= qm::AsymCode(a[i], a_zero, a_scale, kAnchorQmax) << (8 * (i % 4));
  StoreU32(ch.anchors + lane * kVec, w[0]);
  StoreU32(ch.anchors + lane * kVec + 4, w[1]);
#pragma unroll
  for (int t = 1; t < kChunk; ++t) {
    if (t < ch.len) {
      uint32_t packed = 0;
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const float d = qm::Sub(qm::HalfToFloat(Elem(rows[t - 1], i)), a[i]);
        packed |= qm::AsymCode(d, d_zero, d_scale, kDeltaQmax) << (8 * (i / 2) + (i % 2 == 0 ? 4 : 0));
      }
      StoreU32(ch.deltas + ((t - 1) * sh.D + lane * kVec) / 2, packed);
    }
  }
  if (lane == 0) {
    StoreF32(ch.params, a_scale);
    StoreF32(ch.params + 4, a_zero);
    StoreF32(ch.params + 8, d_scale);
    StoreF32(ch.params + 12, d_zero);
    if (ch.c == 0) {
      StoreU32(ch.header, static_cast<uint32_t>(sh.anchor_bytes));
      StoreU32(ch.header + 4, static_cast<uint32_t>(sh.delta_bytes));
      StoreU32(ch.header + 8, static_cast<uint32_t>(sh.param_floats));
    }
  }
}

__global__ void __launch_bounds__(kThreads) DecodeKernel(const uint8_t* body, Shape sh,
                                                         uint16_t* k, uint16_t* v,
                                                         uint32_t* status) {
  const int64_t task = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / sh.P;
  const int lane = threadIdx.x % sh.P;
  if (task >= sh.tasks || lane >= sh.vecs) return;
  const Chunk<const uint8_t> ch(body, sh, task);
  if (ch.c == 0 && lane == 0 &&
      (LoadU32(ch.header) != sh.anchor_bytes || LoadU32(ch.header + 4) != sh.delta_bytes ||
       LoadU32(ch.header + 8) != sh.param_floats)) {
    atomicOr(status, kErrRecord);
  }
  uint16_t* y = (ch.tensor == 0 ? k : v) + ch.slice_elem + ch.start * sh.D + lane * kVec;
  const float a_scale = LoadF32(ch.params), a_zero = LoadF32(ch.params + 4);
  const float d_scale = LoadF32(ch.params + 8), d_zero = LoadF32(ch.params + 12);
  const uint32_t w[2] = {LoadU32(ch.anchors + lane * kVec), LoadU32(ch.anchors + lane * kVec + 4)};
  float a[8];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    a[i] = qm::Dequant(static_cast<float>((w[i / 4] >> (8 * (i % 4))) & 0xFFu), a_scale, a_zero);
  }
  Store16(y, Pack8(a));
#pragma unroll
  for (int t = 1; t < kChunk; ++t) {
    if (t < ch.len) {
      const uint32_t packed = LoadU32(ch.deltas + ((t - 1) * sh.D + lane * kVec) / 2);
      float f[8];
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const uint32_t q = (packed >> (8 * (i / 2) + (i % 2 == 0 ? 4 : 0))) & 0xFu;
        f[i] = qm::Add(a[i], qm::Dequant(static_cast<float>(q), d_scale, d_zero));
      }
      Store16(y + t * sh.D, Pack8(f));
    }
  }
}

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("cachegen", g, format::CachegenBodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::CachegenBodyBytes(g);
}
size_t WorkspaceBytes(const KvGeometry&) { return WorkspaceLayout().bytes(); }

absl::Status Encode(const DeviceKv& kv, const CodecOptions&, DeviceBytes payload, DeviceBytes ws,
                    cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(CachegenCuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kCachegen, g, 0, format::CachegenBodyBytes(g)), payload.data, nullptr,
      0, stream));
  const Shape sh(g);
  EncodeKernel<<<BlocksFor(sh.tasks * sh.P, kThreads), kThreads, 0, stream>>>(
      kv.k, kv.v, sh, payload.data + kPayloadHeaderBytes);
  return LaunchStatus("cachegen encode");
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(CachegenCuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kCachegen, g, 0, format::CachegenBodyBytes(g)), 0xFF, ws,
      nullptr, 0, keep_mask, g.tokens, stream));
  const Shape sh(g);
  DecodeKernel<<<BlocksFor(sh.tasks * sh.P, kThreads), kThreads, 0, stream>>>(
      payload.data + kPayloadHeaderBytes, sh, out.k, out.v, reinterpret_cast<uint32_t*>(ws.data));
  return LaunchStatus("cachegen decode");
}

}  // namespace

const CudaCodec& CachegenCuda() {
  static constexpr CudaCodec kCodec{CodecId::kCachegen, "cachegen", CanEncode, EncodedBytes,
                                    WorkspaceBytes,       Encode,     Decode};
  return kCodec;
}

}  // namespace kvs::cuda
