// kernels/format/fp8_e4m3.h — fp8_e4m3 payload body and the E4M3 code (CODECS.md §0, §2.4).
//
// Body (N = L·H·S·D elements per tensor), back to back, little-endian, unaligned; the same in both
// modes, told apart by the header flag kFlagFp8Compat (kernels/format/payload.h):
//   Kq  u8  [N]   K codes, [L,H,S,D] order
//   Vq  u8  [N]   V codes
//   Ks  f32 [L]   K per-layer scales
//   Vs  f32 [L]   V per-layer scales
//   body bytes = 2·N + 8·L   (ratio 2.000 at Llama-3.1-8B, S = 1024)
//
// Default (kvshuttle): real FP8 E4M3 (float8_e4m3fn: 1 sign, 4 exponent bits with bias 7,
// 3 mantissa bits, subnormals, no infinities, S.1111.111 = NaN, max ±448). scale_l = amax_l / 448
// (1.0 when amax_l == 0); code = E4M3 round-to-nearest-even of x / scale_l, saturating at ±448;
// decode = value(code) · scale_l -> fp16.
// Compat (the KVShuttle reference CPU path): scale_l = amax_l / 240 (1.0 when 0);
// code = clip(rint(x / scale_l + 128), 0, 255) (offset binary, clips beyond ≈0.53·amax);
// decode = (code − 128) · scale_l -> fp16.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/tensor/kv.h"

namespace kvs::format {

inline constexpr float kE4m3Max = 448.0f;
inline constexpr float kFp8CompatRange = 240.0f;

inline uint64_t Fp8E4m3BodyBytes(const KvGeometry& g) {
  return 2 * static_cast<uint64_t>(g.elements()) + 8 * static_cast<uint64_t>(g.layers);
}

// fp32 -> E4M3 code: round to nearest even, saturate to ±448 (infinities included), NaN -> 0x7F
// with the sign. Integer operations on the fp32 bits, plus one fp32 addition that lets the FPU
// round the subnormal range.
inline uint8_t E4m3FromFloat(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  const uint32_t sign = (b >> 24) & 0x80u;
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint8_t>(sign | 0x7Fu);  // NaN
  if (a >= 0x43E00000u) return static_cast<uint8_t>(sign | 0x7Eu);  // >= 448: saturate
  if (a < 0x3C800000u) {  // below 2^-6, the smallest normal: multiples of 2^-9
    // 2^14 + |v| has an ulp of 2^-9, so the addition rounds |v| to the E4M3 subnormal grid;
    // the code (0..8; 8 is 2^-6, the first normal) is the difference of the bit patterns.
    float av, r;
    std::memcpy(&av, &a, 4);
    r = av + 16384.0f;
    uint32_t rb;
    std::memcpy(&rb, &r, 4);
    return static_cast<uint8_t>(sign | (rb - 0x46800000u));
  }
  uint32_t u = a - (120u << 23);           // rebias the exponent 127 -> 7
  u += 0x7FFFFu + ((u >> 20) & 1u);        // round the 20 dropped mantissa bits to nearest even
  return static_cast<uint8_t>(sign | (u >> 20));
}

// E4M3 code -> fp32 (exact); the NaN codes give the quiet NaN 0x7FC00000 with the code's sign.
inline float E4m3ToFloat(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  const uint32_t e = (c >> 3) & 0xFu, m = c & 7u;
  float v;
  if ((c & 0x7Fu) == 0x7Fu) {
    const uint32_t nan = sign | 0x7FC00000u;
    std::memcpy(&v, &nan, 4);
    return v;
  }
  if (e == 0) return sign ? -static_cast<float>(m) / 512.0f : static_cast<float>(m) / 512.0f;
  const uint32_t bits = sign | (e + 120u) << 23 | m << 20;
  std::memcpy(&v, &bits, 4);
  return v;
}

}  // namespace kvs::format
