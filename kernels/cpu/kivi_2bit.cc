// kivi_2bit (CODECS.md §2.7): KIVI-style asymmetric 2-bit quantisation as the KVShuttle
// reference computes it — keys per channel, values per token.
//
// Keys: one (scale, zero) per (layer, head, channel) from the min/max over all S tokens. Values:
// one per (layer, head, token) from the min/max over the D channels. scale = (max − min)/3 (a
// zero range counts as 1, so scale = 1/3), zero = min, q = clip(rint((x − zero)/scale), 0, 3) in
// fp32 with a true division; decode q·scale + zero in fp32, rounded to fp16 (RNE).
// Layout and size: kernels/format/kivi_2bit.h.
//
// Deviation from the reference: a zero-point of −0 is stored as +0, so that the payload does not
// depend on the order of the min reduction (decoded values are the same either way). As in the
// reference there is no token grouping and no fp16 residual window (CODECS.md §8 item 4).
//
// Fast path: the threads take contiguous runs of (layer, head) slices — runs of 4 slices when
// S·D is not a multiple of 4, so that no two threads share a packed byte. Keys take two passes
// over a slice (channel min/max, then quantise), both over rows of D contiguous channels; values
// take one row at a time. Each thread's scratch rows are in the workspace. The arithmetic is the
// reference's, so both paths write the same bytes.
#include "kernels/format/kivi_2bit.h"

#include <algorithm>
#include <cstring>

#include "common/half/half.h"
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/codecs.h"
#include "kernels/cpu/pack2bit.h"

namespace kvs {
namespace {

constexpr CodecInfo kInfo{CodecId::kKivi2Bit, "kivi_2bit", "quantization",
                          "asymmetric 2-bit, keys per channel over all tokens, values per token",
                          /*lossy=*/true, /*exact_size=*/true, /*prunes=*/false};

constexpr float kQmax = format::kKivi2BitQmax;

void Params(float mn, float mx, float* scale, float* zero) {
  float range = mx - mn;
  if (range == 0.0f) range = 1.0f;
  *scale = range / kQmax;
  *zero = mn + 0.0f;  // -0 -> +0
}

// The sections of one body: Byte = uint8_t to write them, const uint8_t to read them.
template <typename Byte>
struct Body {
  Byte *k_codes, *v_codes, *k_scales, *v_scales, *k_zeros, *v_zeros;
  Body(Byte* body, const KvGeometry& g) {
    const format::Kivi2BitSections s = format::Kivi2BitLayout(g);
    k_codes = body + s.k_codes;
    v_codes = body + s.v_codes;
    k_scales = body + s.k_scales;
    v_scales = body + s.v_scales;
    k_zeros = body + s.k_zeros;
    v_zeros = body + s.v_zeros;
  }
};
using OutBody = Body<uint8_t>;
using InBody = Body<const uint8_t>;

// ---- Reference path: scalar, one element at a time, straight from the spec. ----

void EncodeReference(const KvCacheView& kv, const OutBody& b) {
  const KvGeometry& g = kv.geom();
  const int64_t S = g.tokens, D = g.head_dim, slices = g.layers * g.heads;
  pack2::ZeroPadding(b.k_codes, g.elements());
  pack2::ZeroPadding(b.v_codes, g.elements());
  for (int64_t lh = 0; lh < slices; ++lh) {
    const uint16_t* k = kv.k.data + lh * S * D;
    for (int64_t d = 0; d < D; ++d) {
      float mn = HalfToFloat(k[d]), mx = mn;
      for (int64_t s = 1; s < S; ++s) {
        mn = std::min(mn, HalfToFloat(k[s * D + d]));
        mx = std::max(mx, HalfToFloat(k[s * D + d]));
      }
      float scale, zero;
      Params(mn, mx, &scale, &zero);
      StoreF32(b.k_scales + 4 * (lh * D + d), scale);
      StoreF32(b.k_zeros + 4 * (lh * D + d), zero);
      for (int64_t s = 0; s < S; ++s) {
        pack2::PutOne(b.k_codes, (lh * S + s) * D + d,
                      pack2::Portable::Quant1(HalfToFloat(k[s * D + d]), zero, scale, kQmax));
      }
    }
    const uint16_t* v = kv.v.data + lh * S * D;
    for (int64_t s = 0; s < S; ++s) {
      const uint16_t* row = v + s * D;
      float mn = HalfToFloat(row[0]), mx = mn;
      for (int64_t d = 1; d < D; ++d) {
        mn = std::min(mn, HalfToFloat(row[d]));
        mx = std::max(mx, HalfToFloat(row[d]));
      }
      float scale, zero;
      Params(mn, mx, &scale, &zero);
      StoreF32(b.v_scales + 4 * (lh * S + s), scale);
      StoreF32(b.v_zeros + 4 * (lh * S + s), zero);
      for (int64_t d = 0; d < D; ++d) {
        pack2::PutOne(b.v_codes, (lh * S + s) * D + d,
                      pack2::Portable::Quant1(HalfToFloat(row[d]), zero, scale, kQmax));
      }
    }
  }
}

void DecodeReference(const InBody& b, const MutableKvCacheView& out) {
  const KvGeometry& g = out.geom();
  const int64_t S = g.tokens, D = g.head_dim, slices = g.layers * g.heads;
  for (int64_t lh = 0; lh < slices; ++lh) {
    for (int64_t s = 0; s < S; ++s) {
      const float v_scale = LoadF32(b.v_scales + 4 * (lh * S + s));
      const float v_zero = LoadF32(b.v_zeros + 4 * (lh * S + s));
      for (int64_t d = 0; d < D; ++d) {
        const int64_t e = (lh * S + s) * D + d;
        const float k_scale = LoadF32(b.k_scales + 4 * (lh * D + d));
        const float k_zero = LoadF32(b.k_zeros + 4 * (lh * D + d));
        out.k.data[e] =
            FloatToHalf(static_cast<float>(pack2::GetOne(b.k_codes, e)) * k_scale + k_zero);
        out.v.data[e] =
            FloatToHalf(static_cast<float>(pack2::GetOne(b.v_codes, e)) * v_scale + v_zero);
      }
    }
  }
}

// ---- Fast path. ----

// One thread's scratch: four rows of D floats and one of D codes.
struct Scratch {
  float *mn, *mx, *scale, *zero;
  uint8_t* codes;
};
uint64_t ScratchBytes(int64_t D) { return 4 * AlignedBytes(4 * D) + AlignedBytes(D); }
Scratch ScratchOf(absl::Span<uint8_t> ws, int64_t share, int64_t D) {
  const uintptr_t base = AlignedBytes(reinterpret_cast<uintptr_t>(ws.data()));
  uint8_t* p = reinterpret_cast<uint8_t*>(base) + share * ScratchBytes(D);
  float* f[4];
  for (float*& row : f) {
    row = reinterpret_cast<float*>(p);
    p += AlignedBytes(4 * D);
  }
  return {f[0], f[1], f[2], f[3], p};
}

// Slices [lh0, lh1): keys per channel (two passes over the slice's rows), values per token.
template <typename Isa>
void EncodeSlices(const KvCacheView& kv, const OutBody& b, int64_t lh0, int64_t lh1,
                  const Scratch& w) {
  const int64_t S = kv.geom().tokens, D = kv.geom().head_dim;
  for (int64_t lh = lh0; lh < lh1; ++lh) {
    const uint16_t* k = kv.k.data + lh * S * D;
    Isa::ColumnMinMax(k, S, D, D, w.mn, w.mx);
    for (int64_t d = 0; d < D; ++d) Params(w.mn[d], w.mx[d], &w.scale[d], &w.zero[d]);
    std::memcpy(b.k_scales + 4 * lh * D, w.scale, 4 * D);
    std::memcpy(b.k_zeros + 4 * lh * D, w.zero, 4 * D);
    for (int64_t s = 0; s < S; ++s) {
      Isa::Quant(k + s * D, w.zero, w.scale, D, kQmax, w.codes);
      pack2::Put<Isa>(b.k_codes, (lh * S + s) * D, w.codes, D);
    }

    const uint16_t* v = kv.v.data + lh * S * D;
    for (int64_t s = 0; s < S; ++s) {
      float mn, mx, scale, zero;
      Isa::MinMax(v + s * D, D, &mn, &mx);
      Params(mn, mx, &scale, &zero);
      StoreF32(b.v_scales + 4 * (lh * S + s), scale);
      StoreF32(b.v_zeros + 4 * (lh * S + s), zero);
      Isa::QuantUniform(v + s * D, zero, scale, D, kQmax, w.codes);
      pack2::Put<Isa>(b.v_codes, (lh * S + s) * D, w.codes, D);
    }
  }
}

template <typename Isa>
void DecodeSlices(const InBody& b, const MutableKvCacheView& out, int64_t lh0, int64_t lh1,
                  const Scratch& w) {
  const int64_t S = out.geom().tokens, D = out.geom().head_dim;
  for (int64_t lh = lh0; lh < lh1; ++lh) {
    std::memcpy(w.scale, b.k_scales + 4 * lh * D, 4 * D);
    std::memcpy(w.zero, b.k_zeros + 4 * lh * D, 4 * D);
    for (int64_t s = 0; s < S; ++s) {
      const int64_t e = (lh * S + s) * D;
      pack2::Get<Isa>(b.k_codes, e, w.codes, D);
      Isa::Dequant(w.codes, w.scale, w.zero, D, out.k.data + e);
    }
    for (int64_t s = 0; s < S; ++s) {
      const int64_t e = (lh * S + s) * D;
      pack2::Get<Isa>(b.v_codes, e, w.codes, D);
      Isa::DequantUniform(w.codes, LoadF32(b.v_scales + 4 * (lh * S + s)),
                          LoadF32(b.v_zeros + 4 * (lh * S + s)), D, out.v.data + e);
    }
  }
}

void EncodeFast(const KvCacheView& kv, const OutBody& b, absl::Span<uint8_t> ws, ThreadPool* pool) {
  const KvGeometry& g = kv.geom();
  const int64_t slices = g.layers * g.heads;
  pack2::ZeroPadding(b.k_codes, g.elements());
  pack2::ZeroPadding(b.v_codes, g.elements());
  // A unit of slices starts on a whole byte of both code streams.
  const int64_t per_unit = g.slice_elements() % 4 == 0 ? 1 : 4;
  const auto encode = pack2::HasAvx2() ? EncodeSlices<pack2::Avx2> : EncodeSlices<pack2::Portable>;
  RunShares(pool, (slices + per_unit - 1) / per_unit, [&](int64_t share, int64_t u0, int64_t u1) {
    encode(kv, b, u0 * per_unit, std::min(slices, u1 * per_unit), ScratchOf(ws, share, g.head_dim));
  });
}

void DecodeFast(const InBody& b, const MutableKvCacheView& out, absl::Span<uint8_t> ws,
                ThreadPool* pool) {
  const KvGeometry& g = out.geom();
  const auto decode = pack2::HasAvx2() ? DecodeSlices<pack2::Avx2> : DecodeSlices<pack2::Portable>;
  RunShares(pool, g.layers * g.heads, [&](int64_t share, int64_t lh0, int64_t lh1) {
    decode(b, out, lh0, lh1, ScratchOf(ws, share, g.head_dim));
  });
}

class Kivi2BitCodec final : public CodecBase {
 public:
  explicit Kivi2BitCodec(const CodecOptions& o) : CodecBase(kInfo, o) {}

  size_t WorkspaceBytes(const KvGeometry& g, const ThreadPool* pool) const override {
    if (options().path == CodecPath::kReference) return 0;
    return kWorkspaceSlack + PoolThreads(pool) * ScratchBytes(g.head_dim);
  }

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::Kivi2BitBodyBytes(g);
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t> ws, ThreadPool* pool) const override {
    const OutBody b(body.data(), kv.geom());
    if (options().path == CodecPath::kReference) {
      EncodeReference(kv, b);
    } else {
      EncodeFast(kv, b, ws, pool);
    }
    return format::Kivi2BitBodyBytes(kv.geom());
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t> ws, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    // CodecBase checked the body length against the geometry; every section is fixed-size.
    const InBody b(body.data(), out.geom());
    if (options().path == CodecPath::kReference) {
      DecodeReference(b, out);
    } else {
      DecodeFast(b, out, ws, pool);
    }
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewKivi2BitCodec(const CodecOptions& o) {
  return std::make_unique<Kivi2BitCodec>(o);
}

}  // namespace kvs
