// common/half/half.h — IEEE fp16 and bfloat16 <-> fp32 conversion.
//
// Scalar conversions are exact (fp16/bf16 -> fp32) or round-to-nearest-even (fp32 -> fp16/bf16),
// with correct handling of subnormals, infinities and NaN. The bulk functions use the F16C
// instructions when the CPU has them (checked once at run time) and the scalar code otherwise;
// both give identical results.
//
//   float f = kvs::HalfToFloat(0x3C00);          // 1.0f
//   uint16_t h = kvs::FloatToHalf(0.1f);         // 0x2E66
//   kvs::HalfToFloatN(src, dst, n);              // bulk
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvs {

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t FloatToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// fp16 bits -> fp32 (exact).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return BitsToFloat(sign | 0x7F800000u | (mant << 13));  // inf / nan
  if (exp != 0) return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return BitsToFloat(sign);
  // Subnormal: value = mant * 2^-24.
  const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

// fp32 -> fp16 bits, round to nearest even; overflow -> inf; NaN stays NaN.
inline uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatToBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0u));
  }
  if (ax >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520
  if (ax < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // Adding 0.5 (2^-1) aligns the mantissa so that the FPU's RNE does the rounding.
    const float r = BitsToFloat(ax) + 0.5f;
    return static_cast<uint16_t>(sign | (FloatToBits(r) - 0x3F000000u));
  }
  const uint32_t mant_odd = (ax >> 13) & 1u;
  uint32_t u = ax + 0xC8000FFFu + mant_odd;  // rebias exponent (-112 << 23) and round
  return static_cast<uint16_t>(sign | (u >> 13));
}

// bf16 bits -> fp32 (exact).
inline float Bf16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

// fp32 -> bf16 bits, round to nearest even; NaN stays NaN.
inline uint16_t FloatToBf16(float f) {
  const uint32_t x = FloatToBits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  const uint32_t rounding = 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

// Bulk conversions (F16C when available). Buffers must not overlap.
void HalfToFloatN(const uint16_t* src, float* dst, size_t n);
void FloatToHalfN(const float* src, uint16_t* dst, size_t n);
void Bf16ToFloatN(const uint16_t* src, float* dst, size_t n);
void FloatToBf16N(const float* src, uint16_t* dst, size_t n);

// True when the bulk fp16 conversions run on F16C instructions.
bool HasHardwareHalf();

}  // namespace kvs
