// fp8_e4m3 (CODECS.md §0, §2.4): per-layer scaled FP8, K and V separately.
// Default — a deliberate deviation from the KVShuttle reference CPU path: real FP8 E4M3
// (float8_e4m3fn), as the reference's A100 path: scale_l = max|x| over layer l / 448 (1.0 when
// 0), code = E4M3 round-to-nearest-even of x / scale_l (saturating at ±448), decode
// value(code) · scale_l -> fp16.
// options().fp8_compat — the reference CPU path, for reproducing the paper's numbers: offset-uint8
// with step amax_l / 240, clip(rint(x / scale_l + 128), 0, 255), clipped beyond ≈0.53·amax_l;
// decode (code − 128) · scale_l. The encoder marks compat payloads with kFlagFp8Compat and the
// decoder follows the payload's flag, not its own options. Per-layer scales end the body.
// Layout, size and the scalar E4M3 conversion: kernels/format/fp8_e4m3.h.
//
// Fast path: the per-layer pipeline of kernels/cpu/int8_layer.h. The E4M3 kernel does the rounding
// with integer operations on the fp32 bits (format::E4m3FromFloat lane by lane) and, on big
// layers, fills the per-layer code table that the code pass then gathers from; payloads are
// bit-identical to the reference path. Decode turns each code into the fp16 pattern of
// value(code) / 256 (E4M3 is a subset of fp16) and lets F16C convert it.
#include <immintrin.h>

#include <cmath>

#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/codecs.h"
#include "kernels/cpu/int8_layer.h"
#include "kernels/format/fp8_e4m3.h"

namespace kvs {
namespace {

constexpr CodecInfo kInfo{CodecId::kFp8E4m3, "fp8_e4m3", "quantization",
                          "per-layer scaled FP8 E4M3, K and V separately", /*lossy=*/true,
                          /*exact_size=*/true, /*prunes=*/false};

constexpr int64_t kBlock = int8l::kBlock;

#define KVS_AVX2 __attribute__((target("avx2,f16c")))

KVS_AVX2 inline __m256i Set1(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }

// 32 int32 lanes (4 x 8, values 0..255, in order) -> 32 bytes in order.
KVS_AVX2 inline __m256i Bytes32(const __m256i* c) {
  const __m256i w =
      _mm256_packus_epi16(_mm256_packus_epi32(c[0], c[1]), _mm256_packus_epi32(c[2], c[3]));
  return _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// format::E4m3FromFloat on 8 lanes.
KVS_AVX2 inline __m256i E4m3Codes8(__m256 v) {
  const __m256i b = _mm256_castps_si256(v);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(b, 24), Set1(0x80));
  __m256i a = _mm256_and_si256(b, Set1(0x7FFFFFFF));
  const __m256i nan = _mm256_cmpgt_epi32(a, Set1(0x7F800000));
  a = _mm256_min_epi32(a, Set1(0x43E00000));  // saturate at 448 (NaN lanes fixed below)
  __m256i u = _mm256_sub_epi32(a, Set1(120u << 23));
  u = _mm256_add_epi32(u, _mm256_add_epi32(Set1(0x7FFFF),
                                           _mm256_and_si256(_mm256_srli_epi32(u, 20), Set1(1))));
  const __m256i normal = _mm256_srli_epi32(u, 20);
  const __m256 r = _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(16384.0f));
  const __m256i sub = _mm256_sub_epi32(_mm256_castps_si256(r), Set1(0x46800000));
  __m256i code = _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(Set1(0x3C800000), a));
  code = _mm256_or_si256(code, _mm256_and_si256(nan, Set1(0x7F)));
  return _mm256_or_si256(code, sign);
}

// Code kernels (kernels/cpu/int8_layer.h): E4M3 of x / scale.
struct E4m3Kernel {
  static constexpr bool kTable = true;  // measured: ~0.38x -> ~0.54x memcpy with the table
  // (sign-symmetric: E4m3FromFloat ORs the sign into the magnitude's code)
  explicit E4m3Kernel(float scale) : scale(scale) {}
  float scale;
  uint8_t Code(uint16_t h) const { return format::E4m3FromFloat(HalfToFloat(h) / scale); }
  KVS_AVX2 __m256i Codes32(const uint16_t* x) const {
    const __m256 vs = _mm256_set1_ps(scale);
    __m256i c[4];
    for (int k = 0; k < 4; ++k) {
      c[k] = E4m3Codes8(_mm256_div_ps(
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 8 * k))), vs));
    }
    return Bytes32(c);
  }
};

// The reference's offset-uint8: clip(rint(x / scale + 128), 0, 255); NaN -> 0 (as
// _mm256_max_ps(NaN, 0) does).
struct CompatKernel {
  static constexpr bool kTable = false;  // as cheap as INT8's division kernel
  explicit CompatKernel(float scale) : scale(scale) {}
  float scale;
  uint8_t Code(uint16_t h) const {
    float r = std::nearbyint(HalfToFloat(h) / scale + 128.0f);
    r = r > 0.0f ? r : 0.0f;
    r = r < 255.0f ? r : 255.0f;
    return static_cast<uint8_t>(r);
  }
  KVS_AVX2 __m256i Codes32(const uint16_t* x) const {
    const __m256 vs = _mm256_set1_ps(scale);
    __m256i c[4];
    for (int k = 0; k < 4; ++k) {
      const __m256 v = _mm256_div_ps(
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 8 * k))), vs);
      __m256 r = _mm256_round_ps(_mm256_add_ps(v, _mm256_set1_ps(128.0f)),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      r = _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(255.0f));
      c[k] = _mm256_cvttps_epi32(r);
    }
    return Bytes32(c);
  }
};

void DecodeScalar(const uint8_t* q, int64_t n, float scale, bool compat, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = compat ? static_cast<float>(q[i] - 128) : format::E4m3ToFloat(q[i]);
    out[i] = FloatToHalf(v * scale);
  }
}

// 16 codes -> 16 fp16 values. An E4M3 code is an fp16 pattern in disguise: sign << 15 |
// (code & 0x7F) << 7 is the fp16 number value(code) / 256, subnormals included, so F16C does the
// exact decode; the NaN codes become the fp16 NaN 0x7E00 (-> fp32 0x7FC00000, as the scalar path).
KVS_AVX2 inline void E4m3Decode16(__m128i codes, __m256 vs, uint16_t* out) {
  const __m256i c = _mm256_cvtepi8_epi16(codes);  // sign-extended: sign in bits 8..15
  __m256i h = _mm256_and_si256(_mm256_slli_epi16(c, 7),
                               _mm256_set1_epi16(static_cast<short>(0xBF80)));
  const __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x7FFF)),
                                         _mm256_set1_epi16(0x3F80));
  h = _mm256_xor_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x3F80 ^ 0x7E00)));
  const __m256 k256 = _mm256_set1_ps(256.0f);
  const __m256 f0 = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), k256);
  const __m256 f1 = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), k256);
  const __m128i h0 = _mm256_cvtps_ph(_mm256_mul_ps(f0, vs), _MM_FROUND_TO_NEAREST_INT);
  const __m128i h1 = _mm256_cvtps_ph(_mm256_mul_ps(f1, vs), _MM_FROUND_TO_NEAREST_INT);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_set_m128i(h1, h0));
}

// 16 compat codes -> 16 fp16 values.
KVS_AVX2 inline void CompatDecode16(__m128i codes, __m256 vs, uint16_t* out) {
  const __m256i k128 = _mm256_set1_epi32(128);
  const __m256 f0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(codes), k128));
  const __m256 f1 = _mm256_cvtepi32_ps(
      _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8)), k128));
  const __m128i h0 = _mm256_cvtps_ph(_mm256_mul_ps(f0, vs), _MM_FROUND_TO_NEAREST_INT);
  const __m128i h1 = _mm256_cvtps_ph(_mm256_mul_ps(f1, vs), _MM_FROUND_TO_NEAREST_INT);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_set_m128i(h1, h0));
}

template <bool kCompat>
KVS_AVX2 void DecodeAvx2(const uint8_t* q, int64_t n, float scale, uint16_t* out) {
  const __m256 vs = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
    kCompat ? CompatDecode16(c, vs, out + i) : E4m3Decode16(c, vs, out + i);
  }
  DecodeScalar(q + i, n - i, scale, kCompat, out + i);
}

#undef KVS_AVX2

// ---- tensors ----

void EncodeTensor(const KvTensorView& t, uint8_t* q, uint8_t* scales, bool compat, CodecPath path,
                  absl::Span<uint8_t> workspace, ThreadPool* pool) {
  if (compat) {
    int8l::EncodeTensor<CompatKernel>(t, q, scales, path, workspace, pool, [](float amax) {
      return amax == 0.0f ? 1.0f : amax / format::kFp8CompatRange;
    });
  } else {
    int8l::EncodeTensor<E4m3Kernel>(t, q, scales, path, workspace, pool, [](float amax) {
      return amax == 0.0f ? 1.0f : amax / format::kE4m3Max;
    });
  }
}

// Scales are not validated: a corrupt scale yields wrong values, never an out-of-bounds access.
void DecodeTensor(const uint8_t* q, const uint8_t* scales, bool compat,
                  const MutableKvTensorView& out, CodecPath path, ThreadPool* pool) {
  const int64_t le = out.geom.layer_elements();
  if (path == CodecPath::kReference) {
    for (int64_t l = 0; l < out.geom.layers; ++l) {
      DecodeScalar(q + l * le, le, LoadF32(scales + 4 * l), compat, out.layer(l));
    }
    return;
  }
  const bool avx2 = HasAvx2F16c();
  const int64_t per_layer = (le + kBlock - 1) / kBlock;
  ParallelFor(pool, out.geom.layers * per_layer, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t l = b / per_layer, i = (b % per_layer) * kBlock;
      const int64_t len = std::min(le - i, kBlock);
      const float scale = LoadF32(scales + 4 * l);
      const uint8_t* src = q + l * le + i;
      uint16_t* dst = out.layer(l) + i;
      if (!avx2) {
        DecodeScalar(src, len, scale, compat, dst);
      } else {
        compat ? DecodeAvx2<true>(src, len, scale, dst) : DecodeAvx2<false>(src, len, scale, dst);
      }
    }
  });
}

class Fp8E4m3Codec final : public CodecBase {
 public:
  explicit Fp8E4m3Codec(const CodecOptions& o) : CodecBase(kInfo, o) {}

  size_t WorkspaceBytes(const KvGeometry&, const ThreadPool*) const override {
    // The E4M3 code table (kernels/cpu/int8_layer.h); the compat kernel needs none.
    return options().path == CodecPath::kFast && !options().fp8_compat ? int8l::kTableBytes : 0;
  }

 protected:
  uint8_t EncodeFlags() const override { return options().fp8_compat ? kFlagFp8Compat : 0; }
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::Fp8E4m3BodyBytes(g);
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t> workspace,
                                    ThreadPool* pool) const override {
    const KvGeometry& g = kv.geom();
    const int64_t n = g.elements();
    const bool compat = options().fp8_compat;
    uint8_t* scales = body.data() + 2 * n;
    EncodeTensor(kv.k, body.data(), scales, compat, options().path, workspace, pool);
    EncodeTensor(kv.v, body.data() + n, scales + 4 * g.layers, compat, options().path, workspace,
                 pool);
    return format::Fp8E4m3BodyBytes(g);
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t flags,
                          const MutableKvCacheView& out, absl::Span<uint8_t>, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    if (flags & ~kFlagFp8Compat) {
      return absl::InvalidArgumentError("fp8_e4m3: unknown header flags");
    }
    const KvGeometry& g = out.geom();
    const int64_t n = g.elements();
    const bool compat = flags & kFlagFp8Compat;
    const uint8_t* scales = body.data() + 2 * n;
    DecodeTensor(body.data(), scales, compat, out.k, options().path, pool);
    DecodeTensor(body.data() + n, scales + 4 * g.layers, compat, out.v, options().path, pool);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewFp8E4m3Codec(const CodecOptions& o) {
  return std::make_unique<Fp8E4m3Codec>(o);
}

}  // namespace kvs
