// cachegen (CODECS.md §2.9): the KVShuttle reference's "CacheGen-inspired" codec — anchors and
// deltas per chunk of 10 tokens, with no entropy coding.
//
// Per (layer, head) slice [S, D] and chunk of tokens [10c, min(10c + 10, S)):
//   anchor = the chunk's first token, asymmetric 8-bit over its D values: scale = (max − min)/255
//     (a zero range counts as 1), zero = min, q = clip(rint((x − zero)/scale), 0, 255);
//   deltas = every other token minus the unquantised anchor (fp32), all (len − 1)·D of them
//     sharing one asymmetric 4-bit (scale, zero) (scale = (max − min)/15, zero range -> 1); a
//     one-token chunk stores scale 1, zero 0.
// Decode: anchor^ = qa·a_scale + a_zero; token^ = anchor^ + (qd·d_scale + d_zero), in fp32,
// rounded to fp16 — the anchor's error reaches every token of its chunk (open loop).
// Layout and size: kernels/format/cachegen.h. Decode checks every record header against the
// geometry before it reads a record.
//
// Deviation from the reference: zero-points of −0 are stored as +0 (the payload then does not
// depend on the order of the min reductions; decoded values are the same).
//
// Fast path: threads take contiguous runs of slices; per chunk the anchor is converted once, the
// deltas of the chunk's rows are formed with their min/max in one pass and quantised from a
// buffer that stays in L1. Both paths write the same bytes.
#include "kernels/format/cachegen.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/half/half.h"
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/codecs.h"
#include "kernels/cpu/pack2bit.h"

namespace kvs {
namespace {

constexpr CodecInfo kInfo{CodecId::kCachegen, "cachegen", "structured",
                          "8-bit anchor plus 4-bit deltas per chunk of 10 tokens", /*lossy=*/true,
                          /*exact_size=*/true, /*prunes=*/false};

constexpr int64_t kChunk = format::kCachegenChunk;
constexpr float kAnchorQmax = format::kCachegenAnchorQmax;
constexpr float kDeltaQmax = format::kCachegenDeltaQmax;

void Params(float mn, float mx, float qmax, float* scale, float* zero) {
  float range = mx - mn;
  if (range == 0.0f) range = 1.0f;
  *scale = range / qmax;
  *zero = mn + 0.0f;  // -0 -> +0
}

// One record's sections.
template <typename Byte>
struct Record {
  Byte *header, *anchors, *deltas, *params;
  Record(Byte* body, int64_t slice, const format::CachegenRecord& r)
      : header(body + slice * r.total),
        anchors(header + 12),
        deltas(anchors + r.anchor_bytes),
        params(deltas + r.delta_bytes) {}
};

// 4-bit codes, two per byte, element 2j in the high nibble.
void PutNibble(uint8_t* packed, uint64_t e, uint8_t code) {
  uint8_t& b = packed[e / 2];
  b = static_cast<uint8_t>(e % 2 == 0 ? (b & 0x0F) | (code << 4) : (b & 0xF0) | code);
}
uint8_t GetNibble(const uint8_t* packed, uint64_t e) {
  return static_cast<uint8_t>(e % 2 == 0 ? packed[e / 2] >> 4 : packed[e / 2] & 0x0F);
}

// ---- Reference path: scalar, straight from the spec. ----

void EncodeSliceReference(const uint16_t* x, const KvGeometry& g, const Record<uint8_t>& rec) {
  const int64_t S = g.tokens, D = g.head_dim, C = format::CachegenChunks(S);
  const uint64_t n_deltas = static_cast<uint64_t>((S - C) * D);
  if (n_deltas % 2 != 0) rec.deltas[n_deltas / 2] = 0;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t start = c * kChunk, len = std::min(kChunk, S - start);
    const uint16_t* a = x + start * D;
    float mn = HalfToFloat(a[0]), mx = mn;
    for (int64_t d = 1; d < D; ++d) {
      mn = std::min(mn, HalfToFloat(a[d]));
      mx = std::max(mx, HalfToFloat(a[d]));
    }
    float a_scale, a_zero, d_scale = 1.0f, d_zero = 0.0f;
    Params(mn, mx, kAnchorQmax, &a_scale, &a_zero);
    for (int64_t d = 0; d < D; ++d) {
      rec.anchors[c * D + d] =
          pack2::Portable::Quant1(HalfToFloat(a[d]), a_zero, a_scale, kAnchorQmax);
    }
    if (len > 1) {
      auto delta = [&](int64_t t, int64_t d) {
        return HalfToFloat(a[t * D + d]) - HalfToFloat(a[d]);
      };
      mn = mx = delta(1, 0);
      for (int64_t t = 1; t < len; ++t) {
        for (int64_t d = 0; d < D; ++d) {
          mn = std::min(mn, delta(t, d));
          mx = std::max(mx, delta(t, d));
        }
      }
      Params(mn, mx, kDeltaQmax, &d_scale, &d_zero);
      for (int64_t t = 1; t < len; ++t) {
        for (int64_t d = 0; d < D; ++d) {
          PutNibble(rec.deltas, (start - c + t - 1) * D + d,
                    pack2::Portable::Quant1(delta(t, d), d_zero, d_scale, kDeltaQmax));
        }
      }
    }
    const float p[4] = {a_scale, a_zero, d_scale, d_zero};
    std::memcpy(rec.params + 16 * c, p, 16);
  }
}

void DecodeSliceReference(const Record<const uint8_t>& rec, const KvGeometry& g, uint16_t* y) {
  const int64_t S = g.tokens, D = g.head_dim, C = format::CachegenChunks(S);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t start = c * kChunk, len = std::min(kChunk, S - start);
    const float a_scale = LoadF32(rec.params + 16 * c), a_zero = LoadF32(rec.params + 16 * c + 4);
    const float d_scale = LoadF32(rec.params + 16 * c + 8),
                d_zero = LoadF32(rec.params + 16 * c + 12);
    for (int64_t d = 0; d < D; ++d) {
      const float anchor = static_cast<float>(rec.anchors[c * D + d]) * a_scale + a_zero;
      y[start * D + d] = FloatToHalf(anchor);
      for (int64_t t = 1; t < len; ++t) {
        const float q = GetNibble(rec.deltas, (start - c + t - 1) * D + d);
        y[(start + t) * D + d] = FloatToHalf(anchor + (q * d_scale + d_zero));
      }
    }
  }
}

// ---- Fast path. ----

// Kernels besides pack2's MinMax/QuantUniform, in two instruction sets with identical results.
struct Portable : pack2::Portable {
  // delta[t][d] = x[t][d] - anchor[d] for t < rows; *mn, *mx over all of them.
  static void Deltas(const uint16_t* x, const float* anchor, int64_t rows, int64_t D, float* delta,
                     float* mn, float* mx) {
    float lo = HalfToFloat(x[0]) - anchor[0], hi = lo;
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t d = 0; d < D; ++d) {
        const float v = HalfToFloat(x[t * D + d]) - anchor[d];
        delta[t * D + d] = v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
      }
    }
    *mn = lo;
    *mx = hi;
  }
  static void QuantF32(const float* x, float zero, float scale, int64_t n, float qmax,
                       uint8_t* codes) {
    for (int64_t i = 0; i < n; ++i) codes[i] = Quant1(x[i], zero, scale, qmax);
  }
  // anchor[d] = q[d]·scale + zero, and its fp16 row.
  static void DecodeAnchor(const uint8_t* q, float scale, float zero, int64_t D, float* anchor,
                           uint16_t* y) {
    for (int64_t d = 0; d < D; ++d) {
      anchor[d] = static_cast<float>(q[d]) * scale + zero;
      y[d] = FloatToHalf(anchor[d]);
    }
  }
  // y[d] = fp16(anchor[d] + (q[d]·scale + zero)).
  static void DecodeDeltas(const uint8_t* q, float scale, float zero, const float* anchor,
                           int64_t D, uint16_t* y) {
    for (int64_t d = 0; d < D; ++d) {
      y[d] = FloatToHalf(anchor[d] + (static_cast<float>(q[d]) * scale + zero));
    }
  }
  static void PackNibbles(const uint8_t* codes, int64_t nbytes, uint8_t* out) {
    for (int64_t j = 0; j < nbytes; ++j) {
      out[j] = static_cast<uint8_t>(codes[2 * j] << 4 | codes[2 * j + 1]);
    }
  }
  static void UnpackNibbles(const uint8_t* in, int64_t nbytes, uint8_t* codes) {
    for (int64_t j = 0; j < nbytes; ++j) {
      codes[2 * j] = in[j] >> 4;
      codes[2 * j + 1] = in[j] & 0x0F;
    }
  }
};

#define KVS_CACHEGEN_AVX2 __attribute__((target("avx2,fma,f16c")))

struct Avx2 : pack2::Avx2 {
  KVS_CACHEGEN_AVX2 static void Deltas(const uint16_t* x, const float* anchor, int64_t rows,
                                       int64_t D, float* delta, float* mn, float* mx) {
    if (D % 8 != 0) return Portable::Deltas(x, anchor, rows, D, delta, mn, mx);
    __m256 lo = _mm256_set1_ps(HalfToFloat(x[0]) - anchor[0]), hi = lo;
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t d = 0; d < D; d += 8) {
        const __m256 v = _mm256_sub_ps(Load8(x + t * D + d), _mm256_loadu_ps(anchor + d));
        _mm256_storeu_ps(delta + t * D + d, v);
        lo = _mm256_min_ps(v, lo);
        hi = _mm256_max_ps(v, hi);
      }
    }
    alignas(32) float l8[8], h8[8];
    _mm256_store_ps(l8, lo);
    _mm256_store_ps(h8, hi);
    *mn = *std::min_element(l8, l8 + 8);
    *mx = *std::max_element(h8, h8 + 8);
  }
  KVS_CACHEGEN_AVX2 static void QuantF32(const float* x, float zero, float scale, int64_t n,
                                         float qmax, uint8_t* codes) {
    const __m256 vq = _mm256_set1_ps(qmax), vz = _mm256_set1_ps(zero), vs = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      __m256i q[4];
      for (int j = 0; j < 4; ++j) q[j] = Quant8(_mm256_loadu_ps(x + i + 8 * j), vz, vs, vq);
      Store32Codes(codes + i, q[0], q[1], q[2], q[3]);
    }
    for (; i + 8 <= n; i += 8) Store8Codes(codes + i, Quant8(_mm256_loadu_ps(x + i), vz, vs, vq));
    Portable::QuantF32(x + i, zero, scale, n - i, qmax, codes + i);
  }
  KVS_CACHEGEN_AVX2 static void DecodeAnchor(const uint8_t* q, float scale, float zero, int64_t D,
                                             float* anchor, uint16_t* y) {
    const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zero);
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
      const __m256 a = _mm256_add_ps(_mm256_mul_ps(Codes8(q + d), vs), vz);
      _mm256_storeu_ps(anchor + d, a);
      Store8(y + d, a);
    }
    Portable::DecodeAnchor(q + d, scale, zero, D - d, anchor + d, y + d);
  }
  KVS_CACHEGEN_AVX2 static void DecodeDeltas(const uint8_t* q, float scale, float zero,
                                             const float* anchor, int64_t D, uint16_t* y) {
    const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zero);
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
      const __m256 delta = _mm256_add_ps(_mm256_mul_ps(Codes8(q + d), vs), vz);
      Store8(y + d, _mm256_add_ps(_mm256_loadu_ps(anchor + d), delta));
    }
    Portable::DecodeDeltas(q + d, scale, zero, anchor + d, D - d, y + d);
  }
  // 32 codes -> 16 bytes: maddubs forms c0*16 + c1 per pair.
  KVS_CACHEGEN_AVX2 static void PackNibbles(const uint8_t* codes, int64_t nbytes, uint8_t* out) {
    const __m256i weights = _mm256_set1_epi16(0x0110);
    int64_t j = 0;
    for (; j + 16 <= nbytes; j += 16) {
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 2 * j));
      const __m256i v = _mm256_maddubs_epi16(c, weights);
      const __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), b);
    }
    Portable::PackNibbles(codes + 2 * j, nbytes - j, out + j);
  }
  KVS_CACHEGEN_AVX2 static void UnpackNibbles(const uint8_t* in, int64_t nbytes, uint8_t* codes) {
    const __m128i low = _mm_set1_epi8(0x0F);
    int64_t j = 0;
    for (; j + 16 <= nbytes; j += 16) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + j));
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), low), lo = _mm_and_si128(b, low);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 2 * j), _mm_unpacklo_epi8(hi, lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 2 * j + 16), _mm_unpackhi_epi8(hi, lo));
    }
    Portable::UnpackNibbles(in + j, nbytes - j, codes + 2 * j);
  }
};

// Writes codes[0, n) at elements [e, e + n) of a nibble stream (single writer per stream).
template <typename Isa>
void PutNibbles(uint8_t* packed, uint64_t e, const uint8_t* codes, int64_t n) {
  if (n > 0 && e % 2 != 0) {
    PutNibble(packed, e++, *codes++);
    --n;
  }
  Isa::PackNibbles(codes, n / 2, packed + e / 2);
  if (n % 2 != 0) PutNibble(packed, e + n - 1, codes[n - 1]);
}
template <typename Isa>
void GetNibbles(const uint8_t* packed, uint64_t e, uint8_t* codes, int64_t n) {
  if (n > 0 && e % 2 != 0) {
    *codes++ = GetNibble(packed, e++);
    --n;
  }
  Isa::UnpackNibbles(packed + e / 2, n / 2, codes);
  if (n % 2 != 0) codes[n - 1] = GetNibble(packed, e + n - 1);
}

// One thread's scratch: the chunk's deltas and codes, and one anchor row.
struct Scratch {
  float *delta, *anchor;
  uint8_t* codes;
};
uint64_t ScratchBytes(int64_t D) {
  return AlignedBytes(4 * (kChunk - 1) * D) + AlignedBytes(4 * D) + AlignedBytes((kChunk - 1) * D);
}
Scratch ScratchOf(absl::Span<uint8_t> ws, int64_t share, int64_t D) {
  const uintptr_t base = AlignedBytes(reinterpret_cast<uintptr_t>(ws.data()));
  uint8_t* p = reinterpret_cast<uint8_t*>(base) + share * ScratchBytes(D);
  Scratch s;
  s.delta = reinterpret_cast<float*>(p);
  s.anchor = reinterpret_cast<float*>(p + AlignedBytes(4 * (kChunk - 1) * D));
  s.codes = p + AlignedBytes(4 * (kChunk - 1) * D) + AlignedBytes(4 * D);
  return s;
}

template <typename Isa>
void EncodeSliceFast(const uint16_t* x, const KvGeometry& g, const Record<uint8_t>& rec,
                     const Scratch& w) {
  const int64_t S = g.tokens, D = g.head_dim, C = format::CachegenChunks(S);
  const uint64_t n_deltas = static_cast<uint64_t>((S - C) * D);
  if (n_deltas % 2 != 0) rec.deltas[n_deltas / 2] = 0;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t start = c * kChunk, len = std::min(kChunk, S - start);
    const uint16_t* a = x + start * D;
    float mn, mx, a_scale, a_zero, d_scale = 1.0f, d_zero = 0.0f;
    Isa::MinMax(a, D, &mn, &mx);
    Params(mn, mx, kAnchorQmax, &a_scale, &a_zero);
    Isa::QuantUniform(a, a_zero, a_scale, D, kAnchorQmax, rec.anchors + c * D);
    if (len > 1) {
      const int64_t n = (len - 1) * D;
      HalfToFloatN(a, w.anchor, D);
      Isa::Deltas(a + D, w.anchor, len - 1, D, w.delta, &mn, &mx);
      Params(mn, mx, kDeltaQmax, &d_scale, &d_zero);
      Isa::QuantF32(w.delta, d_zero, d_scale, n, kDeltaQmax, w.codes);
      PutNibbles<Isa>(rec.deltas, (start - c) * D, w.codes, n);
    }
    const float p[4] = {a_scale, a_zero, d_scale, d_zero};
    std::memcpy(rec.params + 16 * c, p, 16);
  }
}

template <typename Isa>
void DecodeSliceFast(const Record<const uint8_t>& rec, const KvGeometry& g, uint16_t* y,
                     const Scratch& w) {
  const int64_t S = g.tokens, D = g.head_dim, C = format::CachegenChunks(S);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t start = c * kChunk, len = std::min(kChunk, S - start);
    float p[4];
    std::memcpy(p, rec.params + 16 * c, 16);
    Isa::DecodeAnchor(rec.anchors + c * D, p[0], p[1], D, w.anchor, y + start * D);
    if (len > 1) {
      GetNibbles<Isa>(rec.deltas, (start - c) * D, w.codes, (len - 1) * D);
      for (int64_t t = 1; t < len; ++t) {
        Isa::DecodeDeltas(w.codes + (t - 1) * D, p[2], p[3], w.anchor, D, y + (start + t) * D);
      }
    }
  }
}

class CachegenCodec final : public CodecBase {
 public:
  explicit CachegenCodec(const CodecOptions& o) : CodecBase(kInfo, o) {}

  size_t WorkspaceBytes(const KvGeometry& g, const ThreadPool* pool) const override {
    if (!fast()) return 0;
    return kWorkspaceSlack + PoolThreads(pool) * ScratchBytes(g.head_dim);
  }

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::CachegenBodyBytes(g);
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t> ws, ThreadPool* pool) const override {
    const KvGeometry& g = kv.geom();
    const format::CachegenRecord layout = format::CachegenRecordLayout(g);
    const int64_t slices = g.layers * g.heads;
    auto encode_slice = [&](int64_t i, const Scratch* w) {  // i < slices: K, else V
      const uint16_t* x = (i < slices ? kv.k.data : kv.v.data) + (i % slices) * g.slice_elements();
      const Record<uint8_t> rec(body.data(), i, layout);
      StoreU32(rec.header, static_cast<uint32_t>(layout.anchor_bytes));
      StoreU32(rec.header + 4, static_cast<uint32_t>(layout.delta_bytes));
      StoreU32(rec.header + 8, static_cast<uint32_t>(layout.param_floats));
      if (w == nullptr) {
        EncodeSliceReference(x, g, rec);
      } else if (pack2::HasAvx2()) {
        EncodeSliceFast<Avx2>(x, g, rec, *w);
      } else {
        EncodeSliceFast<Portable>(x, g, rec, *w);
      }
    };
    ForEachSlice(2 * slices, g.head_dim, ws, pool, encode_slice);
    return 2 * slices * layout.total;
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t> ws, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    // CodecBase checked the body length; the records are then fixed-size, and each header must
    // state exactly the geometry's section sizes.
    const KvGeometry& g = out.geom();
    const format::CachegenRecord layout = format::CachegenRecordLayout(g);
    const int64_t slices = g.layers * g.heads;
    for (int64_t i = 0; i < 2 * slices; ++i) {
      const uint8_t* h = body.data() + i * layout.total;
      const uint32_t a = LoadU32(h), d = LoadU32(h + 4), p = LoadU32(h + 8);
      if (a != layout.anchor_bytes || d != layout.delta_bytes || p != layout.param_floats) {
        return absl::InvalidArgumentError(
            absl::StrCat("cachegen: record ", i, " header (", a, ", ", d, ", ", p,
                         ") does not match the geometry (", layout.anchor_bytes, ", ",
                         layout.delta_bytes, ", ", layout.param_floats, ")"));
      }
    }
    auto decode_slice = [&](int64_t i, const Scratch* w) {
      uint16_t* y = (i < slices ? out.k.data : out.v.data) + (i % slices) * g.slice_elements();
      const Record<const uint8_t> rec(body.data(), i, layout);
      if (w == nullptr) {
        DecodeSliceReference(rec, g, y);
      } else if (pack2::HasAvx2()) {
        DecodeSliceFast<Avx2>(rec, g, y, *w);
      } else {
        DecodeSliceFast<Portable>(rec, g, y, *w);
      }
    };
    ForEachSlice(2 * slices, g.head_dim, ws, pool, decode_slice);
    return absl::OkStatus();
  }

 private:
  bool fast() const { return options().path == CodecPath::kFast; }
  // fn(i, scratch) for slices [0, n): the reference path one after another without scratch, the
  // fast path in one share per pool thread with that thread's scratch.
  template <typename Fn>
  void ForEachSlice(int64_t n, int64_t head_dim, absl::Span<uint8_t> ws, ThreadPool* pool, const Fn& fn) const {
    if (!fast()) {
      for (int64_t i = 0; i < n; ++i) fn(i, nullptr);
      return;
    }
    RunShares(pool, n, [&](int64_t share, int64_t i0, int64_t i1) {
      const Scratch w = ScratchOf(ws, share, head_dim);
      for (int64_t i = i0; i < i1; ++i) fn(i, &w);
    });
  }
};

}  // namespace

std::unique_ptr<Codec> NewCachegenCodec(const CodecOptions& o) {
  return std::make_unique<CachegenCodec>(o);
}

}  // namespace kvs
