#include "common/half/half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVS_HALF_X86 1
#endif

namespace kvs {
namespace {

#if KVS_HALF_X86
__attribute__((target("avx,f16c"))) void HalfToFloatF16c(const uint16_t* src, float* dst,
                                                          size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = HalfToFloat(src[i]);
}

__attribute__((target("avx,f16c"))) void FloatToHalfF16c(const float* src, uint16_t* dst,
                                                          size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 f = _mm256_loadu_ps(src + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) dst[i] = FloatToHalf(src[i]);
}

bool DetectF16c() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
}
#endif

}  // namespace

bool HasHardwareHalf() {
#if KVS_HALF_X86
  static const bool has = DetectF16c();  // a CPU fact, computed once
  return has;
#else
  return false;
#endif
}

void HalfToFloatN(const uint16_t* src, float* dst, size_t n) {
#if KVS_HALF_X86
  if (HasHardwareHalf()) return HalfToFloatF16c(src, dst, n);
#endif
  for (size_t i = 0; i < n; ++i) dst[i] = HalfToFloat(src[i]);
}

void FloatToHalfN(const float* src, uint16_t* dst, size_t n) {
#if KVS_HALF_X86
  if (HasHardwareHalf()) return FloatToHalfF16c(src, dst, n);
#endif
  for (size_t i = 0; i < n; ++i) dst[i] = FloatToHalf(src[i]);
}

void Bf16ToFloatN(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(src[i]);
}

void FloatToBf16N(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = FloatToBf16(src[i]);
}

}  // namespace kvs
