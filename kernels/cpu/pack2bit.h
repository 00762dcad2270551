// kernels/cpu/pack2bit.h — internal: 2-bit code streams and the row kernels of the asymmetric
// quantisers. Shared by kivi_2bit and kvquant_2bit; cachegen uses the row kernels.
//
// Streams: 4 codes per byte, MSB-first (CODECS.md §1.3) — element 4j in bits 7-6, 4j+1 in bits
// 5-4, 4j+2 in bits 3-2, 4j+3 in bits 1-0; a stream of n codes occupies ⌈n/4⌉ bytes whose unused
// trailing slots are zero. Put/Get address a stream by element index, so a caller writes or reads
// any run of codes (a row, a run of channels) without tracking byte boundaries.
//
// Row kernels: Portable (scalar) and Avx2 (AVX2 + F16C intrinsics; only where HasAvx2()) give
// identical results, so a codec's fast path writes the same bytes on either.
//
//   pack2::ZeroPadding(packed, n);                                // before the stream is written
//   pack2::Avx2::QuantUniform(row, zero, scale, D, 3.0f, codes);  // codes[i] in [0, 3]
//   pack2::Put<pack2::Avx2>(packed, r * D, codes, D);
//   pack2::Get<pack2::Avx2>(packed, r * D, codes, D);
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/half/half.h"
#include "kernels/cpu/cpu_util.h"

namespace kvs::pack2 {

#define KVS_PACK2_INLINE inline __attribute__((always_inline))

// One code, read-modify-write of its byte.
KVS_PACK2_INLINE void PutOne(uint8_t* packed, uint64_t e, uint8_t code) {
  const unsigned shift = 6 - 2 * static_cast<unsigned>(e & 3);
  uint8_t& b = packed[e >> 2];
  b = static_cast<uint8_t>((b & ~(3u << shift)) | (static_cast<unsigned>(code) << shift));
}
KVS_PACK2_INLINE uint8_t GetOne(const uint8_t* packed, uint64_t e) {
  return static_cast<uint8_t>((packed[e >> 2] >> (6 - 2 * (e & 3))) & 3u);
}

// Writes codes[0, n) at elements [e, e + n) of the stream. Bytes wholly inside the run are
// overwritten; the at most two bytes shared with neighbouring elements are read-modify-written,
// so concurrent writers must own disjoint bytes (runs that start and end on multiples of 4).
template <typename Isa>
void Put(uint8_t* packed, uint64_t e, const uint8_t* codes, int64_t n) {
  for (; n > 0 && (e & 3) != 0; --n) PutOne(packed, e++, *codes++);
  const int64_t whole = n / 4;
  Isa::PackBytes(codes, whole, packed + e / 4);
  e += 4 * whole;
  codes += 4 * whole;
  for (n -= 4 * whole; n > 0; --n) PutOne(packed, e++, *codes++);
}

// Reads elements [e, e + n) of the stream into codes[0, n); touches only the bytes of the run.
template <typename Isa>
void Get(const uint8_t* packed, uint64_t e, uint8_t* codes, int64_t n) {
  for (; n > 0 && (e & 3) != 0; --n) *codes++ = GetOne(packed, e++);
  const int64_t whole = n / 4;
  Isa::UnpackBytes(packed + e / 4, whole, codes);
  e += 4 * whole;
  codes += 4 * whole;
  for (n -= 4 * whole; n > 0; --n) *codes++ = GetOne(packed, e++);
}

// Zeroes the padding slots of a stream of n codes (the last byte when n is not a multiple of 4).
// Call before the codes are written: Put never touches slots outside its run.
inline void ZeroPadding(uint8_t* packed, uint64_t n) {
  if (n % 4 != 0) packed[n / 4] = 0;
}

// Row kernels of the asymmetric quantisers, on fp16 rows, in two instruction sets that give
// identical results: Portable (scalar) and Avx2 (AVX2 + F16C; call only where HasAvx2()).
//   q = clip(rint((x - zero) / scale), 0, qmax)   fp32, true division, NaN -> 0
//   x^ = fp16_rne(q * scale + zero)                fp32, no FMA
// "Uniform" variants take one (scale, zero) for the row, the others one per element.
struct Portable {
  // Packs 4·nbytes codes into nbytes bytes. With the four codes of a byte read as one little-endian
  // u32 w = c0 | c1<<8 | c2<<16 | c3<<24, w·0x40100401 puts c0<<6 | c1<<4 | c2<<2 | c3 in bits
  // 24-31 and leaves less than 2^24 below them (every cross term lands under bit 24 or above 31).
  static void PackBytes(const uint8_t* codes, int64_t nbytes, uint8_t* out) {
    for (int64_t j = 0; j < nbytes; ++j) {
      uint32_t w;
      std::memcpy(&w, codes + 4 * j, 4);
      out[j] = static_cast<uint8_t>((w * 0x40100401u) >> 24);
    }
  }
  // Unpacks nbytes bytes into 4·nbytes codes: the byte b spread as b>>6 | b<<4 | b<<14 | b<<24
  // has c0..c3 in the low two bits of bytes 0..3 of the u32 (masked with 0x03030303).
  static void UnpackBytes(const uint8_t* in, int64_t nbytes, uint8_t* codes) {
    for (int64_t j = 0; j < nbytes; ++j) {
      const uint32_t b = in[j];
      const uint32_t w = ((b >> 6) | (b << 4) | (b << 14) | (b << 24)) & 0x03030303u;
      std::memcpy(codes + 4 * j, &w, 4);
    }
  }
  static float Clip(float q, float qmax) {
    q = q > 0.0f ? q : 0.0f;  // NaN -> 0
    return q < qmax ? q : qmax;
  }
  static uint8_t Quant1(float x, float zero, float scale, float qmax) {
    return static_cast<uint8_t>(
        static_cast<int32_t>(Clip(__builtin_rintf((x - zero) / scale), qmax)));
  }
  // Per column i in [0, n): min and max over rows r in [0, rows) of x[r * stride + i].
  static void ColumnMinMax(const uint16_t* x, int64_t rows, int64_t stride, int64_t n, float* mn,
                           float* mx) {
    for (int64_t i = 0; i < n; ++i) mn[i] = mx[i] = HalfToFloat(x[i]);
    for (int64_t r = 1; r < rows; ++r) {
      for (int64_t i = 0; i < n; ++i) {
        const float f = HalfToFloat(x[r * stride + i]);
        mn[i] = f < mn[i] ? f : mn[i];
        mx[i] = f > mx[i] ? f : mx[i];
      }
    }
  }
  // Min and max over x[0, n), n >= 1.
  static void MinMax(const uint16_t* x, int64_t n, float* lo, float* hi) {
    float a = HalfToFloat(x[0]), b = a;
    for (int64_t i = 1; i < n; ++i) {
      const float f = HalfToFloat(x[i]);
      a = f < a ? f : a;
      b = f > b ? f : b;
    }
    *lo = a;
    *hi = b;
  }
  static void Quant(const uint16_t* x, const float* zero, const float* scale, int64_t n, float qmax,
                    uint8_t* codes) {
    for (int64_t i = 0; i < n; ++i) codes[i] = Quant1(HalfToFloat(x[i]), zero[i], scale[i], qmax);
  }
  static void QuantUniform(const uint16_t* x, float zero, float scale, int64_t n, float qmax,
                           uint8_t* codes) {
    for (int64_t i = 0; i < n; ++i) codes[i] = Quant1(HalfToFloat(x[i]), zero, scale, qmax);
  }
  static void Dequant(const uint8_t* codes, const float* scale, const float* zero, int64_t n,
                      uint16_t* out) {
    for (int64_t i = 0; i < n; ++i) {
      out[i] = FloatToHalf(static_cast<float>(codes[i]) * scale[i] + zero[i]);
    }
  }
  static void DequantUniform(const uint8_t* codes, float scale, float zero, int64_t n,
                             uint16_t* out) {
    for (int64_t i = 0; i < n; ++i) {
      out[i] = FloatToHalf(static_cast<float>(codes[i]) * scale + zero);
    }
  }
};

#define KVS_PACK2_AVX2 __attribute__((target("avx2,fma,f16c")))

struct Avx2 {
  // 32 codes -> 8 bytes: maddubs forms c0*64 + c1*16 and c2*4 + c3, madd adds the pair, and the
  // low byte of each u32 is gathered.
  KVS_PACK2_AVX2 static void PackBytes(const uint8_t* codes, int64_t nbytes, uint8_t* out) {
    const __m256i weights = _mm256_set1_epi32(0x01041040);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i low_bytes =
        _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                         -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    if (nbytes < 8) return Portable::PackBytes(codes, nbytes, out);
    for (int64_t i = 0; i < nbytes; i += 8) {
      const int64_t j = std::min(i, nbytes - 8);  // the last block may overlap: same bytes again
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 4 * j));
      const __m256i v = _mm256_madd_epi16(_mm256_maddubs_epi16(c, weights), ones);
      const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, low_bytes),
                                                    _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm256_castsi256_si128(b));
    }
  }
  // 8 bytes -> 32 codes: each byte widened to a u32 and spread as in Portable::UnpackBytes.
  KVS_PACK2_AVX2 static void UnpackBytes(const uint8_t* in, int64_t nbytes, uint8_t* codes) {
    const __m256i mask = _mm256_set1_epi32(0x03030303);
    if (nbytes < 8) return Portable::UnpackBytes(in, nbytes, codes);
    for (int64_t i = 0; i < nbytes; i += 8) {
      const int64_t j = std::min(i, nbytes - 8);  // the last block may overlap: same codes again
      const __m256i b =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j)));
      const __m256i w =
          _mm256_or_si256(_mm256_or_si256(_mm256_srli_epi32(b, 6), _mm256_slli_epi32(b, 4)),
                          _mm256_or_si256(_mm256_slli_epi32(b, 14), _mm256_slli_epi32(b, 24)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 4 * j), _mm256_and_si256(w, mask));
    }
  }
  KVS_PACK2_AVX2 static __m256 Load8(const uint16_t* x) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  }
  KVS_PACK2_AVX2 static void Store8(uint16_t* out, __m256 f) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                     _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // Eight codes as int32; max_ps returns its second operand for NaN, so NaN -> 0.
  KVS_PACK2_AVX2 static __m256i Quant8(__m256 f, __m256 zero, __m256 scale, __m256 qmax) {
    __m256 q = _mm256_div_ps(_mm256_sub_ps(f, zero), scale);
    q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), qmax);
    return _mm256_cvttps_epi32(q);
  }
  // Four vectors of eight int32 codes (each <= 255) -> 32 bytes in element order.
  KVS_PACK2_AVX2 static void Store32Codes(uint8_t* codes, __m256i a, __m256i b, __m256i c,
                                          __m256i d) {
    const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes),
                        _mm256_permutevar8x32_epi32(bytes, order));
  }
  KVS_PACK2_AVX2 static void Store8Codes(uint8_t* codes, __m256i a) {
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes), _mm_packus_epi16(w, w));
  }
  KVS_PACK2_AVX2 static __m256 Codes8(const uint8_t* codes) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes))));
  }

  // Blocks of 32 columns keep their minima and maxima in registers for all the rows.
  KVS_PACK2_AVX2 static void ColumnMinMax(const uint16_t* x, int64_t rows, int64_t stride,
                                          int64_t n, float* mn, float* mx) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      __m256 lo[4], hi[4];
      for (int j = 0; j < 4; ++j) lo[j] = hi[j] = Load8(x + i + 8 * j);
      for (int64_t r = 1; r < rows; ++r) {
        const uint16_t* row = x + r * stride + i;
        for (int j = 0; j < 4; ++j) {
          const __m256 f = Load8(row + 8 * j);
          lo[j] = _mm256_min_ps(f, lo[j]);
          hi[j] = _mm256_max_ps(f, hi[j]);
        }
      }
      for (int j = 0; j < 4; ++j) {
        _mm256_storeu_ps(mn + i + 8 * j, lo[j]);
        _mm256_storeu_ps(mx + i + 8 * j, hi[j]);
      }
    }
    for (; i + 8 <= n; i += 8) {
      __m256 lo = Load8(x + i), hi = lo;
      for (int64_t r = 1; r < rows; ++r) {
        const __m256 f = Load8(x + r * stride + i);
        lo = _mm256_min_ps(f, lo);
        hi = _mm256_max_ps(f, hi);
      }
      _mm256_storeu_ps(mn + i, lo);
      _mm256_storeu_ps(mx + i, hi);
    }
    Portable::ColumnMinMax(x + i, rows, stride, n - i, mn + i, mx + i);
  }
  KVS_PACK2_AVX2 static void MinMax(const uint16_t* x, int64_t n, float* lo, float* hi) {
    if (n < 8) return Portable::MinMax(x, n, lo, hi);
    __m256 vmn = Load8(x), vmx = vmn;
    for (int64_t i = 8; i < n; i += 8) {
      const __m256 f = Load8(x + std::min(i, n - 8));  // the last block may overlap
      vmn = _mm256_min_ps(f, vmn);
      vmx = _mm256_max_ps(f, vmx);
    }
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(vmn), _mm256_extractf128_ps(vmn, 1));
    __m128 M = _mm_max_ps(_mm256_castps256_ps128(vmx), _mm256_extractf128_ps(vmx, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    M = _mm_max_ps(M, _mm_movehl_ps(M, M));
    *lo = _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
    *hi = _mm_cvtss_f32(_mm_max_ss(M, _mm_shuffle_ps(M, M, 1)));
  }
  KVS_PACK2_AVX2 static void Quant(const uint16_t* x, const float* zero, const float* scale,
                                   int64_t n, float qmax, uint8_t* codes) {
    const __m256 vq = _mm256_set1_ps(qmax);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      __m256i q[4];
      for (int j = 0; j < 4; ++j) {
        const int64_t k = i + 8 * j;
        q[j] = Quant8(Load8(x + k), _mm256_loadu_ps(zero + k), _mm256_loadu_ps(scale + k), vq);
      }
      Store32Codes(codes + i, q[0], q[1], q[2], q[3]);
    }
    for (; i < n && n >= 8; i += 8) {
      const int64_t k = std::min(i, n - 8);  // the last block may overlap: same codes again
      Store8Codes(codes + k,
                  Quant8(Load8(x + k), _mm256_loadu_ps(zero + k), _mm256_loadu_ps(scale + k), vq));
    }
    if (n < 8) Portable::Quant(x, zero, scale, n, qmax, codes);
  }
  KVS_PACK2_AVX2 static void QuantUniform(const uint16_t* x, float zero, float scale, int64_t n,
                                          float qmax, uint8_t* codes) {
    const __m256 vq = _mm256_set1_ps(qmax), vz = _mm256_set1_ps(zero), vs = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      Store32Codes(codes + i, Quant8(Load8(x + i), vz, vs, vq),
                   Quant8(Load8(x + i + 8), vz, vs, vq), Quant8(Load8(x + i + 16), vz, vs, vq),
                   Quant8(Load8(x + i + 24), vz, vs, vq));
    }
    for (; i < n && n >= 8; i += 8) {
      const int64_t k = std::min(i, n - 8);  // the last block may overlap: same codes again
      Store8Codes(codes + k, Quant8(Load8(x + k), vz, vs, vq));
    }
    if (n < 8) Portable::QuantUniform(x, zero, scale, n, qmax, codes);
  }
  KVS_PACK2_AVX2 static void Dequant(const uint8_t* codes, const float* scale, const float* zero,
                                     int64_t n, uint16_t* out) {
    int64_t i = 0;
    for (; i < n && n >= 8; i += 8) {
      const int64_t k = std::min(i, n - 8);  // the last block may overlap: same values again
      const __m256 q = _mm256_mul_ps(Codes8(codes + k), _mm256_loadu_ps(scale + k));
      Store8(out + k, _mm256_add_ps(q, _mm256_loadu_ps(zero + k)));
    }
    if (n < 8) Portable::Dequant(codes, scale, zero, n, out);
  }
  KVS_PACK2_AVX2 static void DequantUniform(const uint8_t* codes, float scale, float zero,
                                            int64_t n, uint16_t* out) {
    const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zero);
    int64_t i = 0;
    for (; i < n && n >= 8; i += 8) {
      const int64_t k = std::min(i, n - 8);  // the last block may overlap: same values again
      Store8(out + k, _mm256_add_ps(_mm256_mul_ps(Codes8(codes + k), vs), vz));
    }
    if (n < 8) Portable::DequantUniform(codes, scale, zero, n, out);
  }
};

// True when the CPU runs the Avx2 kernels (checked once).
inline bool HasAvx2() { return HasAvx2F16c(); }

}  // namespace kvs::pack2

#undef KVS_PACK2_INLINE
#undef KVS_PACK2_AVX2
