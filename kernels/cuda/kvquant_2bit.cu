// kvquant_2bit on the GPU, K and V in the same launches, each tensor on its own statistics.
// Encode, two passes over the input:
//   1. stats: per (layer, head) row chunk, per channel, Σ|x| as an exact integer (units of 2^-24,
//      qm::AbsFixed; added into 128-bit totals, two 64-bit atomics with a carry, so the sums are
//      exact and independent of the order), a non-finite flag, and the min/max order keys per
//      (layer, channel).
//   2. select (one block per tensor): the n_out largest totals (ties to the lower channel, a
//      non-finite sum above every number — the CPU codec's rule; its fp64 sums are exact for any
//      KV whose channel sums stay below 2^29, so both pick the same channels), the blob's header
//      and channel lists, per-layer scale/zero over the normal channels.
//   3. codes: tiles of 64 rows; lane groups take rows (16-byte loads) and put the codes into shared
//      memory in stream order, then each thread packs 4 codes into a byte of the (byte-unaligned)
//      stream; outlier values are copied on the way.
// Decode: one block per tensor validates the section lengths, counts and channel lists (range,
// ascending normal list, distinct outliers outside it) and builds a channel map; then tiles of 64
// rows: the tile's code bytes staged in shared memory, lane groups write rows (16-byte stores).
// Layout: kernels/format/kvquant_2bit.h.
#include "kernels/cuda/kvquant_2bit.cuh"

#include "common/status/status.h"
#include "kernels/cuda/codec_frame.cuh"
#include "kernels/cuda/device_common.cuh"
#include "kernels/format/kvquant_2bit.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunkRows = 256;  // stats: rows per block
constexpr int kTileRows = 64;        // codes: rows per block (a multiple of 4: whole code bytes)
constexpr int kMaxOut = 2;           // n_out for D <= 256
constexpr float kQmax = format::kKvquant2BitQmax;

struct Shape {
  explicit Shape(const KvGeometry& g)
      : L(g.layers), HS(g.heads * g.tokens), S(g.tokens), D(static_cast<int>(g.head_dim)),
        vecs(D / kVec), P(Pow2AtLeast(vecs)), rows_per_step(kThreads / P),
        n_out(static_cast<int>(format::Kvquant2BitOutliers(g.head_dim))), n_normal(D - n_out),
        rows(g.layers * g.heads * g.tokens), slices(g.layers * g.heads),
        chunks((g.tokens + kChunkRows - 1) / kChunkRows), tiles((rows + kTileRows - 1) / kTileRows) {
    const format::Kvquant2BitBlob b = format::Kvquant2BitBlobLayout(g);
    blob = b.total;
    for (int i = 0; i < format::kKvquant2BitSections; ++i) len[i] = b.len[i];
    at[0] = 4 * format::kKvquant2BitSections;
    for (int i = 1; i < format::kKvquant2BitSections; ++i) at[i] = at[i - 1] + len[i - 1];
  }
  int64_t L, HS, S;
  int D, vecs, P, rows_per_step, n_out, n_normal;
  int64_t rows, slices, chunks, tiles;
  uint64_t blob, len[format::kKvquant2BitSections], at[format::kKvquant2BitSections];
};

// Per-tensor workspace arrays (index t = 0 for K, 1 for V).
struct Stats {
  unsigned long long* sum;  // [2][D][2] exact Σ|x| in units of 2^-24, (low, high) 64-bit words
  uint32_t* nonfinite;      // [2][D]
  uint32_t* min_inv;        // [2][L][D] 0xFFFF - min order key
  uint32_t* max;            // [2][L][D]
  float* scale;             // [2][L]
  float* zero;              // [2][L]
};

__global__ void __launch_bounds__(kThreads) StatsKernel(const uint16_t* k, const uint16_t* v,
                                                        Shape sh, Stats st) {
  __shared__ unsigned long long sum_s[kThreads * kVec];
  __shared__ uint32_t lo_s[kThreads * kVec], hi_s[kThreads * kVec];
  const int64_t per_tensor = sh.slices * sh.chunks;
  const int t = static_cast<int>(blockIdx.x / per_tensor);
  const int64_t lh = (blockIdx.x % per_tensor) / sh.chunks;
  const int64_t r0 = (blockIdx.x % sh.chunks) * kChunkRows, r1 = min(sh.S, r0 + kChunkRows);
  const int lane = threadIdx.x % sh.P, rg = threadIdx.x / sh.P;
  if (lane < sh.vecs) {
    const uint16_t* x = (t == 0 ? k : v) + lh * sh.S * sh.D + lane * kVec;
    unsigned long long sum[8];
    uint32_t lo[8], hi[8], bad = 0;
#pragma unroll
    for (int i = 0; i < kVec; ++i) sum[i] = 0, lo[i] = 0xFFFFu, hi[i] = 0;
#pragma unroll 4
    for (int64_t r = r0 + rg; r < r1; r += sh.rows_per_step) {
      const uint4 q = Load16(x + r * sh.D);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const uint16_t h = Elem(q, i);
        if (qm::IsFiniteHalf(h)) {
          sum[i] += qm::AbsFixed(h);
        } else {
          bad |= 1u << i;
        }
        const uint32_t key = qm::OrderKey(h);
        lo[i] = min(lo[i], key);
        hi[i] = max(hi[i], key);
      }
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int at = rg * sh.D + lane * kVec + i;
      sum_s[at] = sum[i];
      lo_s[at] = lo[i];
      hi_s[at] = hi[i];
      if (bad & (1u << i)) atomicOr(&st.nonfinite[t * sh.D + lane * kVec + i], 1u);
    }
  }
  __syncthreads();
  const int64_t l = lh / (sh.HS / sh.S);
  for (int d = threadIdx.x; d < sh.D; d += kThreads) {
    unsigned long long sum = 0;
    uint32_t lo = 0xFFFFu, hi = 0;
    for (int g = 0; g < sh.rows_per_step; ++g) {
      sum += sum_s[g * sh.D + d];
      lo = min(lo, lo_s[g * sh.D + d]);
      hi = max(hi, hi_s[g * sh.D + d]);
    }
    unsigned long long* total = st.sum + 2 * (t * sh.D + d);
    if (atomicAdd(total, sum) + sum < sum) atomicAdd(total + 1, 1ull);  // carry into the high word
    atomicMax(&st.min_inv[(t * sh.L + l) * sh.D + d], 0xFFFFu - lo);
    atomicMax(&st.max[(t * sh.L + l) * sh.D + d], hi);
  }
}

// One block per tensor: outliers, blob header and lists, per-layer parameters.
__global__ void __launch_bounds__(kThreads) SelectKernel(Shape sh, Stats st, uint8_t* body,
                                                         int32_t* map) {
  __shared__ int32_t out_s[kMaxOut];
  __shared__ int32_t normal_s[256];
  const int t = blockIdx.x;
  uint8_t* blob = body + t * sh.blob;
  int32_t* tmap = map + t * sh.D;
  if (threadIdx.x == 0) {
    // Largest totals first, ties to the lower channel, a non-finite sum above every number.
    bool taken[256] = {};
    int32_t order[kMaxOut];
    for (int k = 0; k < sh.n_out; ++k) {
      int best = -1;
      unsigned long long best_hi = 0, best_lo = 0;
      for (int d = 0; d < sh.D; ++d) {
        const unsigned long long* total = st.sum + 2 * (t * sh.D + d);
        const bool bad = st.nonfinite[t * sh.D + d] != 0;
        const unsigned long long hi = bad ? ~0ull : total[1], lo = bad ? ~0ull : total[0];
        if (!taken[d] && (best < 0 || hi > best_hi || (hi == best_hi && lo > best_lo))) {
          best = d, best_hi = hi, best_lo = lo;
        }
      }
      taken[best] = true;
      order[k] = best;
    }
    for (int k = 0; k < sh.n_out; ++k) out_s[k] = order[sh.n_out - 1 - k];  // ascending magnitude
    int j = 0;
    for (int d = 0; d < sh.D; ++d) {
      if (!taken[d]) normal_s[j++] = d;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < format::kKvquant2BitSections; i += kThreads) {
    StoreU32(blob + 4 * i, static_cast<uint32_t>(sh.len[i]));
  }
  if (threadIdx.x == 0) {
    StoreU32(blob + sh.at[0], static_cast<uint32_t>(sh.n_out));
    StoreU32(blob + sh.at[0] + 4, static_cast<uint32_t>(sh.n_normal));
  }
  for (int k = threadIdx.x; k < sh.n_out; k += kThreads) {
    StoreU32(blob + sh.at[1] + 4 * k, static_cast<uint32_t>(out_s[k]));
    tmap[out_s[k]] = -(k + 1);
  }
  for (int j = threadIdx.x; j < sh.n_normal; j += kThreads) {
    StoreU32(blob + sh.at[2] + 4 * j, static_cast<uint32_t>(normal_s[j]));
    tmap[normal_s[j]] = j + 1;
  }
  for (int64_t l = threadIdx.x; l < sh.L; l += kThreads) {
    uint32_t lo = 0xFFFFu, hi = 0;
    for (int j = 0; j < sh.n_normal; ++j) {
      const int64_t c = (t * sh.L + l) * sh.D + normal_s[j];
      lo = min(lo, 0xFFFFu - st.min_inv[c]);
      hi = max(hi, st.max[c]);
    }
    float scale, zero;
    qm::RangeParams(qm::HalfToFloat(qm::KeyToHalf(lo)), qm::HalfToFloat(qm::KeyToHalf(hi)), kQmax,
                    &scale, &zero);
    st.scale[t * sh.L + l] = scale;
    st.zero[t * sh.L + l] = zero;
    StoreF32(blob + sh.at[5] + 4 * l, scale);
    StoreF32(blob + sh.at[6] + 4 * l, zero);
  }
}

// A tile of kTileRows rows: each group of P lanes takes a row (16-byte loads, 8 channels a lane),
// puts the normal channels' codes into shared memory in the stream's (row, normal index) order
// and copies the outlier values out; then each thread packs 4 consecutive codes into a byte of
// the stream (byte-unaligned in general: the tile starts on a whole byte, r0 being a multiple of
// 4; the stream's padding slots past rows·n_normal stay zero).
__global__ void __launch_bounds__(kThreads) CodesKernel(const uint16_t* k, const uint16_t* v,
                                                        Shape sh, Stats st, uint8_t* body,
                                                        const int32_t* map) {
  __shared__ uint8_t codes_s[kTileRows * 256];
  __shared__ int32_t map_s[256];
  const int t = static_cast<int>(blockIdx.x / sh.tiles);
  const int64_t r0 = (blockIdx.x % sh.tiles) * kTileRows;
  const int nrows = static_cast<int>(min(static_cast<int64_t>(kTileRows), sh.rows - r0));
  for (int d = threadIdx.x; d < sh.D; d += kThreads) map_s[d] = map[t * sh.D + d];
  __syncthreads();
  uint8_t* blob = body + t * sh.blob;
  uint8_t* outliers = blob + sh.at[3];
  const int lane = threadIdx.x % sh.P, rg = threadIdx.x / sh.P;
  if (lane < sh.vecs) {
    const uint16_t* x = (t == 0 ? k : v) + r0 * sh.D + lane * kVec;
    for (int r = rg; r < nrows; r += sh.rows_per_step) {
      const int64_t l = Div64(r0 + r, sh.HS);
      const float scale = st.scale[t * sh.L + l], zero = st.zero[t * sh.L + l];
      const uint4 q = Load16(x + r * sh.D);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const int32_t m = map_s[lane * kVec + i];
        const uint16_t h = Elem(q, i);
        if (m > 0) {
          codes_s[r * sh.n_normal + m - 1] =
              static_cast<uint8_t>(qm::AsymCode(qm::HalfToFloat(h), zero, scale, kQmax));
        } else if (m < 0) {
          uint8_t* dst = outliers + 2 * ((r0 + r) * sh.n_out + (-m - 1));
          dst[0] = static_cast<uint8_t>(h);
          dst[1] = static_cast<uint8_t>(h >> 8);
        }
      }
    }
  }
  __syncthreads();
  const int n = nrows * sh.n_normal;  // codes in this tile
  uint8_t* codes = blob + sh.at[4] + r0 * sh.n_normal / 4;
  for (int b = threadIdx.x; 4 * b < n; b += kThreads) {
    uint32_t byte = 0;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      if (4 * b + s < n) byte |= static_cast<uint32_t>(codes_s[4 * b + s]) << (6 - 2 * s);
    }
    codes[b] = static_cast<uint8_t>(byte);
  }
}

__device__ __forceinline__ uint32_t BlobU32(const uint8_t* blob, uint64_t at) {
  return LoadU32(blob + at);
}

// One block per tensor, one thread: lengths, counts and channel lists; the channel map
// (normal j -> j + 1, outlier k -> -(k + 1); channels left 0 decode as zeros and are an error).
__global__ void ValidateKernel(const uint8_t* body, Shape sh, int32_t* map, uint32_t* status) {
  if (threadIdx.x != 0) return;
  const int t = blockIdx.x;
  const uint8_t* blob = body + t * sh.blob;
  int32_t* tmap = map + t * sh.D;
  uint32_t err = 0;
  for (int i = 0; i < format::kKvquant2BitSections; ++i) {
    if (BlobU32(blob, 4 * i) != sh.len[i]) err |= kErrSections;
  }
  if (BlobU32(blob, sh.at[0]) != static_cast<uint32_t>(sh.n_out) ||
      BlobU32(blob, sh.at[0] + 4) != static_cast<uint32_t>(sh.n_normal)) {
    err |= kErrSections;
  }
  uint32_t prev = 0;
  for (int j = 0; j < sh.n_normal; ++j) {
    const uint32_t d = BlobU32(blob, sh.at[2] + 4 * j);
    if (d >= static_cast<uint32_t>(sh.D) || (j > 0 && d <= prev)) {
      err |= kErrChannels;
    } else {
      tmap[d] = j + 1;
    }
    prev = d;
  }
  for (int k = 0; k < sh.n_out; ++k) {
    const uint32_t d = BlobU32(blob, sh.at[1] + 4 * k);
    if (d >= static_cast<uint32_t>(sh.D) || tmap[d] != 0) {
      err |= kErrChannels;
    } else {
      tmap[d] = -(k + 1);
    }
  }
  if (err) atomicOr(status, err);
}

// A tile of kTileRows rows: its code bytes staged in shared memory, then each group of P lanes
// writes a row, 8 channels a lane, from the channel map (a normal code, an outlier value, or 0
// for a channel a malformed payload left unassigned).
__global__ void __launch_bounds__(kThreads) DecodeKernel(const uint8_t* body, Shape sh,
                                                         const int32_t* map, uint16_t* k,
                                                         uint16_t* v) {
  __shared__ uint8_t codes_s[kTileRows * 256 / 4];
  __shared__ int32_t map_s[256];
  const int t = static_cast<int>(blockIdx.x / sh.tiles);
  const int64_t r0 = (blockIdx.x % sh.tiles) * kTileRows;
  const int nrows = static_cast<int>(min(static_cast<int64_t>(kTileRows), sh.rows - r0));
  const uint8_t* blob = body + t * sh.blob;
  const uint8_t* codes = blob + sh.at[4] + r0 * sh.n_normal / 4;
  for (int b = threadIdx.x; 4 * b < nrows * sh.n_normal; b += kThreads) codes_s[b] = codes[b];
  for (int d = threadIdx.x; d < sh.D; d += kThreads) map_s[d] = map[t * sh.D + d];
  __syncthreads();
  const int lane = threadIdx.x % sh.P, rg = threadIdx.x / sh.P;
  if (lane >= sh.vecs) return;
  uint16_t* y = (t == 0 ? k : v) + r0 * sh.D + lane * kVec;
  const uint8_t* outliers = blob + sh.at[3];
  for (int r = rg; r < nrows; r += sh.rows_per_step) {
    const int64_t l = Div64(r0 + r, sh.HS);
    const float scale = LoadF32(blob + sh.at[5] + 4 * l), zero = LoadF32(blob + sh.at[6] + 4 * l);
    uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int32_t m = map_s[lane * kVec + i];
      uint32_t h = 0;
      if (m > 0) {
        const int e = r * sh.n_normal + (m - 1);  // within the tile
        const uint32_t q = (codes_s[e / 4] >> (6 - 2 * (e % 4))) & 3u;
        h = qm::FloatToHalf(qm::Dequant(static_cast<float>(q), scale, zero));
      } else if (m < 0) {
        const uint8_t* src = outliers + 2 * ((r0 + r) * sh.n_out + (-m - 1));
        h = src[0] | static_cast<uint32_t>(src[1]) << 8;
      }
      w[i / 2] |= h << (16 * (i % 2));
    }
    Store16(y + r * sh.D, make_uint4(w[0], w[1], w[2], w[3]));
  }
}

absl::Status CanEncode(const KvGeometry& g) {
  return CanEncodeCommon("kvquant_2bit", g, format::Kvquant2BitBodyBytes(g));
}
uint64_t EncodedBytes(const KvGeometry& g) {
  return kPayloadHeaderBytes + format::Kvquant2BitBodyBytes(g);
}

struct Ws {
  explicit Ws(const KvGeometry& g)
      : D(g.head_dim), L(g.layers),
        map(layout.Take(8 * D)),
        sum(layout.Take(32 * D)),
        nonfinite(layout.Take(8 * D)),
        min_inv(layout.Take(8 * L * D)),
        max(layout.Take(8 * L * D)),
        scale(layout.Take(8 * L)),
        zero(layout.Take(8 * L)) {}
  WorkspaceLayout layout;
  int64_t D, L;
  size_t map, sum, nonfinite, min_inv, max, scale, zero;
  // Encode zeroes [map, scale) in its prologue; decode zeroes the map.
  size_t zeroed_bytes() const { return scale - map; }
};
size_t WorkspaceBytes(const KvGeometry& g) { return Ws(g).layout.bytes(); }

absl::Status Encode(const DeviceKv& kv, const CodecOptions&, DeviceBytes payload, DeviceBytes ws,
                    cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckEncodeArgs(Kvquant2BitCuda(), kv, payload, ws));
  const KvGeometry& g = kv.geom;
  const Ws w(g);
  KVS_RETURN_IF_ERROR(LaunchEncodePrologue(
      MakeHeader(CodecId::kKvquant2Bit, g, 0, format::Kvquant2BitBodyBytes(g)), payload.data,
      ws.data + w.map, w.zeroed_bytes(), stream));
  const Shape sh(g);
  const Stats st{reinterpret_cast<unsigned long long*>(ws.data + w.sum),
                 reinterpret_cast<uint32_t*>(ws.data + w.nonfinite),
                 reinterpret_cast<uint32_t*>(ws.data + w.min_inv),
                 reinterpret_cast<uint32_t*>(ws.data + w.max),
                 reinterpret_cast<float*>(ws.data + w.scale),
                 reinterpret_cast<float*>(ws.data + w.zero)};
  int32_t* map = reinterpret_cast<int32_t*>(ws.data + w.map);
  uint8_t* body = payload.data + kPayloadHeaderBytes;
  StatsKernel<<<static_cast<unsigned>(2 * sh.slices * sh.chunks), kThreads, 0, stream>>>(
      kv.k, kv.v, sh, st);
  SelectKernel<<<2, kThreads, 0, stream>>>(sh, st, body, map);
  CodesKernel<<<static_cast<unsigned>(2 * sh.tiles), kThreads, 0, stream>>>(kv.k, kv.v, sh, st,
                                                                            body, map);
  return LaunchStatus("kvquant_2bit encode");
}

absl::Status Decode(ConstDeviceBytes payload, const MutableDeviceKv& out, DeviceBytes ws,
                    cudaStream_t stream, uint8_t* keep_mask) {
  KVS_RETURN_IF_ERROR(CheckDecodeArgs(Kvquant2BitCuda(), payload, out, ws));
  const KvGeometry& g = out.geom;
  const Ws w(g);
  KVS_RETURN_IF_ERROR(LaunchDecodePrologue(
      payload.data, MakeHeader(CodecId::kKvquant2Bit, g, 0, format::Kvquant2BitBodyBytes(g)),
      0xFF, ws, ws.data + w.map, 8 * g.head_dim, keep_mask, g.tokens, stream));
  const Shape sh(g);
  int32_t* map = reinterpret_cast<int32_t*>(ws.data + w.map);
  const uint8_t* body = payload.data + kPayloadHeaderBytes;
  ValidateKernel<<<2, 32, 0, stream>>>(body, sh, map, reinterpret_cast<uint32_t*>(ws.data));
  DecodeKernel<<<static_cast<unsigned>(2 * sh.tiles), kThreads, 0, stream>>>(body, sh, map,
                                                                             out.k, out.v);
  return LaunchStatus("kvquant_2bit decode");
}

}  // namespace

const CudaCodec& Kvquant2BitCuda() {
  static constexpr CudaCodec kCodec{CodecId::kKvquant2Bit, "kvquant_2bit", CanEncode,
                                    EncodedBytes,          WorkspaceBytes, Encode,
                                    Decode};
  return kCodec;
}

}  // namespace kvs::cuda
