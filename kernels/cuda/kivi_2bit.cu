// kivi_2bit on the GPU.
// Keys, two passes: (1) per-channel min/max over the S tokens of each (layer, head) slice — each
// block reduces a chunk of 256 rows in registers and shared memory and merges it into the
// workspace with one atomicMax per channel and bound (order keys of the fp16 bits, the minimum
// stored inverted so that a zeroed workspace is the identity); (2) per-channel scale/zero into
// shared memory (block 0 of a slice writes them to the payload), then codes. Values, one pass:
// a group of D/8 lanes per token row (min/max by shuffles), codes, per-row scale/zero.
// Every lane loads 16 bytes (8 channels) and stores their 8 codes as 2 bytes. Same fp32
// arithmetic as the CPU codec, so the payload bytes are equal. Layout: kernels/format/kivi_2bit.h.
#include "kernels/cuda/kivi_2bit.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/device_common.cuh"
#include "kernels/format/kivi_2bit.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunkRows = 256;  // key rows per block
constexpr float kQmax = format::kKivi2BitQmax;

// Thread layout over rows of D channels: P lanes per row (the power of two >= D/8; lanes past
// D/8 idle), kThreads / P rows side by side.
struct Shape {
  explicit Shape(const KvGeometry& g)
      : S(g.tokens), D(static_cast<int>(g.head_dim)), vecs(D / kVec), P(Pow2AtLeast(vecs)),
        rows_per_step(kThreads / P), chunks((g.tokens + kChunkRows - 1) / kChunkRows) {}
  int64_t S;
  int D, vecs, P, rows_per_step;
  int64_t chunks;
};

template <typename Byte>
struct Body {
  Body(Byte* body, const KvGeometry& g) {
    const format::Kivi2BitSections s = format::Kivi2BitLayout(g);
    k_codes = body + s.k_codes;
    v_codes = body + s.v_codes;
    k_scales = body + s.k_scales;
    v_scales = body + s.v_scales;
    k_zeros = body + s.k_zeros;
    v_zeros = body + s.v_zeros;
  }
  Byte *k_codes, *v_codes, *k_scales, *v_scales, *k_zeros, *v_zeros;
};

// 8 codes (0..3) -> 2 bytes, element 4j in bits 7-6 of byte j (as a little-endian u16).
__device__ __forceinline__ uint16_t Pack2Bit(const uint32_t c[8]) {
  const uint32_t b0 = c[0] << 6 | c[1] << 4 | c[2] << 2 | c[3];
  const uint32_t b1 = c[4] << 6 | c[5] << 4 | c[6] << 2 | c[7];
  return static_cast<uint16_t>(b0 | b1 << 8);
}
__device__ __forceinline__ uint32_t Code2Bit(uint16_t packed, int i) {
  return (packed >> (8 * (i / 4) + 6 - 2 * (i % 4))) & 3u;
}
__device__ __forceinline__ int64_t CodeByte(int64_t element) { return element / 4; }

struct KeyStats {
  uint32_t* min_inv;  // [L·H·D] 0xFFFF - min order key
  uint32_t* max;      // [L·H·D] max order key
};

__global__ void __launch_bounds__(kThreads) KeyStatsKernel(const uint16_t* k, Shape sh,
                                                           KeyStats st) {
  __shared__ uint32_t lo_s[kThreads * kVec], hi_s[kThreads * kVec];  // [row group][D]
  const int64_t lh = blockIdx.x / sh.chunks, r0 = (blockIdx.x % sh.chunks) * kChunkRows;
  const int64_t r1 = min(sh.S, r0 + kChunkRows);
  const int lane = threadIdx.x % sh.P, rg = threadIdx.x / sh.P;
  const uint16_t* x = k + lh * sh.S * sh.D + lane * kVec;
  if (lane < sh.vecs) {
    uint32_t lo[8], hi[8];
#pragma unroll
    for (int i = 0; i < kVec; ++i) lo[i] = 0xFFFFu, hi[i] = 0;
#pragma unroll 4
    for (int64_t r = r0 + rg; r < r1; r += sh.rows_per_step) {
      const uint4 v = Load16(x + r * sh.D);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const uint32_t key = qm::OrderKey(Elem(v, i));
        lo[i] = min(lo[i], key);
        hi[i] = max(hi[i], key);
      }
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      lo_s[rg * sh.D + lane * kVec + i] = lo[i];
      hi_s[rg * sh.D + lane * kVec + i] = hi[i];
    }
  }
  __syncthreads();
  for (int d = threadIdx.x; d < sh.D; d += kThreads) {
    uint32_t lo = 0xFFFFu, hi = 0;
    for (int g = 0; g < sh.rows_per_step; ++g) {
      lo = min(lo, lo_s[g * sh.D + d]);
      hi = max(hi, hi_s[g * sh.D + d]);
    }
    atomicMax(&st.min_inv[lh * sh.D + d], 0xFFFFu - lo);
    atomicMax(&st.max[lh * sh.D + d], hi);
  }
}

__device__ __forceinline__ float KeyValue(uint32_t key) {
  return qm::HalfToFloat(qm::KeyToHalf(key));
}

__global__ void __launch_bounds__(kThreads) KeyCodesKernel(const uint16_t* k, Shape sh,
                                                           KeyStats st, Body<uint8_t> b) {
  __shared__ float scale_s[256], zero_s[256];
  const int64_t lh = blockIdx.x / sh.chunks, r0 = (blockIdx.x % sh.chunks) * kChunkRows;
  const int64_t r1 = min(sh.S, r0 + kChunkRows);
  for (int d = threadIdx.x; d < sh.D; d += kThreads) {
    const int64_t c = lh * sh.D + d;
    float scale, zero;
    qm::RangeParams(KeyValue(0xFFFFu - st.min_inv[c]), KeyValue(st.max[c]), kQmax, &scale, &zero);
    scale_s[d] = scale;
    zero_s[d] = zero;
    if (r0 == 0) {
      StoreF32(b.k_scales + 4 * c, scale);
      StoreF32(b.k_zeros + 4 * c, zero);
    }
  }
  __syncthreads();
  const int lane = threadIdx.x % sh.P, rg = threadIdx.x / sh.P;
  if (lane >= sh.vecs) return;
  float scale[8], zero[8];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    scale[i] = scale_s[lane * kVec + i];
    zero[i] = zero_s[lane * kVec + i];
  }
  const int64_t e0 = lh * sh.S * sh.D + lane * kVec;
#pragma unroll 4
  for (int64_t r = r0 + rg; r < r1; r += sh.rows_per_step) {
    const int64_t e = e0 + r * sh.D;
    const uint4 v = Load16(k + e);
    uint32_t c[8];
#pragma unroll
    for (int i = 0; i < kVec; ++i) c[i] = qm::AsymCode(qm::HalfToFloat(Elem(v, i)), zero[i], scale[i], kQmax);
    *reinterpret_cast<uint16_t*>(b.k_codes + CodeByte(e)) = Pack2Bit(c);
  }
}

// One group of P lanes per value row.
__global__ void __launch_bounds__(kThreads) ValueCodesKernel(const uint16_t* v, int64_t rows,
                                                             Shape sh, Body<uint8_t> b) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / sh.P;
  const int lane = threadIdx.x % sh.P;
  const bool active = row < rows && lane < sh.vecs;
  const int64_t e = row * sh.D + lane * kVec;
  uint4 x = make_uint4(0, 0, 0, 0);
  uint32_t lo = 0xFFFFu, hi = 0;
  if (active) {
    x = Load16(v + e);
    KeyMinMax8(x, &lo, &hi);
  }
  lo = GroupMin(lo, sh.P);  // every lane of the warp takes part
  hi = GroupMax(hi, sh.P);
  if (!active) return;
  float scale, zero;
  qm::RangeParams(KeyValue(lo), KeyValue(hi), kQmax, &scale, &zero);
  uint32_t c[8];
#pragma unroll
  for (int i = 0; i < kVec; ++i) c[i] = qm::AsymCode(qm::HalfToFloat(Elem(x, i)), zero, scale, kQmax);
  *reinterpret_cast<uint16_t*>(b.v_codes + CodeByte(e)) = Pack2Bit(c);
  if (lane == 0) {
    StoreF32(b.v_scales + 4 * row, scale);
    StoreF32(b.v_zeros + 4 * row, zero);
  }
}

__global__ void __launch_bounds__(kThreads) KeyDecodeKernel(Body<const uint8_t> b, Shape sh,
                                                            uint16_t* k) {
  const int64_t lh = blockIdx.x / sh.chunks, r0 = (blockIdx.x % sh.chunks) * kChunkRows;
  const int64_t r1 = min(sh.S, r0 + kChunkRows);
  const int lane = threadIdx.x % sh.P, rg = threadIdx.x / sh.P;
  if (lane >= sh.vecs) return;
  float scale[8], zero[8];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int64_t c = lh * sh.D + lane * kVec + i;
    scale[i] = LoadF32(b.k_scales + 4 * c);
    zero[i] = LoadF32(b.k_zeros + 4 * c);
  }
  const int64_t e0 = lh * sh.S * sh.D + lane * kVec;
#pragma unroll 4
  for (int64_t r = r0 + rg; r < r1; r += sh.rows_per_step) {
    const int64_t e = e0 + r * sh.D;
    const uint16_t packed = *reinterpret_cast<const uint16_t*>(b.k_codes + CodeByte(e));
    float f[8];
#pragma unroll
    for (int i = 0; i < kVec; ++i) f[i] = qm::Dequant(static_cast<float>(Code2Bit(packed, i)), scale[i], zero[i]);
    Store16(k + e, Pack8(f));
  }
}

__global__ void __launch_bounds__(kThreads) ValueDecodeKernel(Body<const uint8_t> b, int64_t rows,
                                                              Shape sh, uint16_t* v) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / sh.P;
  const int lane = threadIdx.x % sh.P;
  if (row >= rows || lane >= sh.vecs) return;
  const int64_t e = row * sh.D + lane * kVec;
  const float scale = LoadF32(b.v_scales + 4 * row), zero = LoadF32(b.v_zeros + 4 * row);
  const uint16_t packed = *reinterpret_cast<const uint16_t*>(b.v_codes + CodeByte(e));
  float f[8];
#pragma unroll
  for (int i = 0; i < kVec; ++i) f[i] = qm::Dequant(static_cast<float>(Code2Bit(packed, i)), scale, zero);
  Store16(v + e, Pack8(f));
}

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("kivi_2bit", g, format::Kivi2BitBodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::Kivi2BitBodyBytes(g);
}

struct Ws {
  explicit Ws(const KvGeometry& g)
      : stats_bytes(8 * g.layers * g.heads * g.head_dim), stats(layout.Take(stats_bytes)) {}
  WorkspaceLayout layout;
  size_t stats_bytes, stats;
};
size_t WorkspaceBytes(const KvGeometry& g) { return Ws(g).layout.bytes(); }

absl::Status Encode(const DeviceKv& kv, const CodecOptions&, DeviceBytes payload, DeviceBytes ws,
                    cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(Kivi2BitCuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  const Ws w(g);
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kKivi2Bit, g, 0, format::Kivi2BitBodyBytes(g)), payload.data,
      ws.data + w.stats, w.stats_bytes, stream));
  const Shape sh(g);
  const Body<uint8_t> b(payload.data + kPayloadHeaderBytes, g);
  uint32_t* stats = reinterpret_cast<uint32_t*>(ws.data + w.stats);
  const KeyStats st{stats, stats + g.layers * g.heads * g.head_dim};
  const unsigned key_blocks = static_cast<unsigned>(g.layers * g.heads * sh.chunks);
  KeyStatsKernel<<<key_blocks, kThreads, 0, stream>>>(kv.k, sh, st);
  KeyCodesKernel<<<key_blocks, kThreads, 0, stream>>>(kv.k, sh, st, b);
  const int64_t rows = g.layers * g.heads * g.tokens;
  ValueCodesKernel<<<BlocksFor(rows, sh.rows_per_step), kThreads, 0, stream>>>(kv.v, rows, sh, b);
  return LaunchStatus("kivi_2bit encode");
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(Kivi2BitCuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kKivi2Bit, g, 0, format::Kivi2BitBodyBytes(g)), 0xFF, ws,
      nullptr, 0, keep_mask, g.tokens, stream));
  const Shape sh(g);
  const Body<const uint8_t> b(payload.data + kPayloadHeaderBytes, g);
  KeyDecodeKernel<<<static_cast<unsigned>(g.layers * g.heads * sh.chunks), kThreads, 0, stream>>>(
      b, sh, out.k);
  const int64_t rows = g.layers * g.heads * g.tokens;
  ValueDecodeKernel<<<BlocksFor(rows, sh.rows_per_step), kThreads, 0, stream>>>(b, rows, sh,
                                                                                  out.v);
  return LaunchStatus("kivi_2bit decode");
}

}  // namespace

const CudaCodec& Kivi2BitCuda() {
  static constexpr CudaCodec kCodec{CodecId::kKivi2Bit, "kivi_2bit", CanEncode, EncodedBytes,
                                    WorkspaceBytes,       Encode,      Decode};
  return kCodec;
}

}  // namespace kvs::cuda
