// kernels/cpu/int8_layer.h — internal, header-only: per-layer scaled 8-bit codes. The symmetric
// INT8 quantiser of uniform_int8 (K and V) and mixed_k8v4 (K), and the machinery fp8_e4m3 shares
// with it: the per-layer max|x| pass and the per-layer code table (CODECS.md §2.4, §2.5).
//
// INT8, per layer l of an [L, H, S, D] fp16 tensor: amax = max |x| over the H·S·D values,
// scale = amax / 127 (1.0 when amax == 0), q = clip(rint(x / scale), -127, 127) as int8; decode
// q · scale -> fp16 (RNE). Sections: codes int8 [N] in tensor order; scales f32 [L], little-endian,
// unaligned.
//
// Reference path: scalar, single-threaded. Fast path, per tensor (AVX2/F16C kernels, each pass
// split over the pool in blocks):
// - max|x| on the fp16 bits (for non-NaN values |x| orders as the integer bits & 0x7FFF); the max
//   pass of layer l+1 rides along with the code pass of layer l, prefetched ahead, so one read
//   stream's latency hides behind the other's arithmetic;
// - codes: a per-element kernel (true division, RNE, clip) — or, for kernels that declare it
//   worthwhile (E4M3) and layers with several elements per fp16 pattern up to ±amax, a table
//   T[h] = kernel(h) over those patterns and one gather per element. The code of an element
//   depends only on its fp16 bits and the layer scale, so the table gives exactly the kernel's
//   codes.
// Both paths are bit-identical for non-NaN input (NaN inputs give in-bounds, unspecified codes).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "absl/types/span.h"
#include "common/half/half.h"
#include "common/tensor/kv.h"
#include "common/thread_pool/thread_pool.h"
#include "kernels/codec.h"
#include "kernels/format/bytes.h"
#include "kernels/cpu/cpu_util.h"

namespace kvs::int8l {

inline constexpr int64_t kBlock = 1 << 15;  // elements per parallel task
// How far ahead (elements) the code pass prefetches the next layer for its max pass: the
// hardware prefetcher alone leaves that stream latency-bound (measured: ~0.45x -> ~0.6x memcpy).
inline constexpr int64_t kPrefetch = 2048;
// Workspace of the fast encoders: one code per fp16 bit pattern, + 3 bytes for 4-byte gathers.
inline constexpr size_t kTableBytes = (size_t{1} << 16) + 4;

#define KVS_AVX2 __attribute__((target("avx2,f16c")))

inline float Int8Scale(float amax) { return amax == 0.0f ? 1.0f : amax / 127.0f; }

// clip(rint(v), -127, 127); NaN -> -127 (as _mm256_max_ps(NaN, -127) does).
inline uint8_t Int8Code(float v) {
  float r = std::nearbyint(v);
  r = r > -127.0f ? r : -127.0f;
  r = r < 127.0f ? r : 127.0f;
  return static_cast<uint8_t>(static_cast<int8_t>(r));
}

// ---- max |x| ----

inline uint16_t AbsMaxBitsScalar(const uint16_t* x, int64_t n) {
  uint16_t m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max<uint16_t>(m, x[i] & 0x7FFF);
  return m;
}

KVS_AVX2 inline uint16_t AbsMaxBitsAvx2(const uint16_t* x, int64_t n) {
  const __m256i mask = _mm256_set1_epi16(0x7FFF);
  __m256i m0 = _mm256_setzero_si256(), m1 = m0;
  const int64_t n32 = n & ~int64_t{31};
  for (int64_t i = 0; i < n32; i += 32) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 16));
    m0 = _mm256_max_epu16(m0, _mm256_and_si256(mask, a));
    m1 = _mm256_max_epu16(m1, _mm256_and_si256(mask, b));
  }
  const __m256i m = _mm256_max_epu16(m0, m1);
  // max of 8 u16 = 0xFFFF - min of (0xFFFF - x)
  const __m128i h = _mm_max_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  const __m128i mn = _mm_minpos_epu16(_mm_sub_epi16(_mm_set1_epi16(-1), h));
  const uint16_t r = static_cast<uint16_t>(0xFFFF - _mm_extract_epi16(mn, 0));
  return std::max(r, AbsMaxBitsScalar(x + n32, n - n32));
}

// max |x| over a layer in fp32 (the reference).
inline float AbsMaxScalar(const uint16_t* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(HalfToFloat(x[i])));
  return m;
}

inline void AtomicMax(std::atomic<uint16_t>& best, uint16_t m) {
  uint16_t cur = best.load(std::memory_order_relaxed);
  while (m > cur && !best.compare_exchange_weak(cur, m, std::memory_order_relaxed)) {
  }
}

// max |x| over a layer as fp16 bits (the fast path), split over the pool.
inline uint16_t AbsMaxBits(const uint16_t* x, int64_t n, ThreadPool* pool) {
  const bool avx2 = HasAvx2F16c();
  std::atomic<uint16_t> best{0};
  ParallelFor(pool, (n + kBlock - 1) / kBlock, [&](int64_t b0, int64_t b1) {
    const int64_t i = b0 * kBlock, len = std::min(n, b1 * kBlock) - i;
    AtomicMax(best, avx2 ? AbsMaxBitsAvx2(x + i, len) : AbsMaxBitsScalar(x + i, len));
  });
  return best.load(std::memory_order_relaxed);
}

// ---- the per-layer code pipeline ----
//
// A code kernel K maps one fp16 pattern to its 8-bit code under a fixed layer scale:
//   uint8_t Code(uint16_t h) const;                       scalar (the reference)
//   KVS_AVX2 __m256i Codes32(const uint16_t* x) const;    32 codes in order, bit-identical to Code
//   static constexpr bool kTable;   worth replacing by a table on big layers; such a kernel must be
//                                   sign-symmetric: Code(h | 0x8000) == Code(h) | 0x80 (non-NaN h)

// Codes x[0, n) into q and returns max(bits & 0x7FFF) over next[0, n) (0 when next is null): the
// max pass of the following layer rides along with the code pass of this one, so the memory reads
// of one overlap the arithmetic of the other.
template <typename K>
KVS_AVX2 uint16_t CodeBlockAvx2(const K& k, const uint16_t* x, int64_t n, uint8_t* q,
                                const uint16_t* next) {
  const __m256i mask = _mm256_set1_epi16(0x7FFF);
  __m256i m0 = _mm256_setzero_si256(), m1 = m0;
  const int64_t n32 = n & ~int64_t{31};
  for (int64_t i = 0; i < n32; i += 32) {
    if (next) {
      _mm_prefetch(reinterpret_cast<const char*>(next + std::min(i + kPrefetch, n32 - 32)),
                   _MM_HINT_T0);
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(next + i));
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(next + i + 16));
      m0 = _mm256_max_epu16(m0, _mm256_and_si256(mask, a));
      m1 = _mm256_max_epu16(m1, _mm256_and_si256(mask, b));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), k.Codes32(x + i));
  }
  for (int64_t i = n32; i < n; ++i) q[i] = k.Code(x[i]);
  if (!next) return 0;
  alignas(32) uint16_t lanes[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_max_epu16(m0, m1));
  uint16_t m = AbsMaxBitsScalar(next + n32, n - n32);
  for (uint16_t v : lanes) m = std::max(m, v);
  return m;
}

template <typename K>
uint16_t CodeBlockScalar(const K& k, const uint16_t* x, int64_t n, uint8_t* q,
                         const uint16_t* next) {
  for (int64_t i = 0; i < n; ++i) q[i] = k.Code(x[i]);
  return next ? AbsMaxBitsScalar(next, n) : 0;
}

// The table kernel: T[h] for every fp16 pattern h with |h| <= the layer's max (4-byte gathers:
// the table has 3 readable bytes past its last entry). Negative patterns are filled from the
// positive ones by sign symmetry.
struct TableKernel {
  const uint8_t* table;
  uint8_t Code(uint16_t h) const { return table[h]; }
  KVS_AVX2 __m256i Codes32(const uint16_t* x) const {
    const int* base = reinterpret_cast<const int*>(table);
    __m256i c[4];
    for (int k = 0; k < 4; ++k) {
      const __m256i idx =
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 8 * k)));
      c[k] = _mm256_and_si256(_mm256_i32gather_epi32(base, idx, 1), _mm256_set1_epi32(0xFF));
    }
    const __m256i w =
        _mm256_packus_epi16(_mm256_packus_epi32(c[0], c[1]), _mm256_packus_epi32(c[2], c[3]));
    return _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  }
};

// Encodes tensor t with per-layer scales: scale_l = scale_of(max |x| over layer l), codes by
// Kernel(scale_l) into q (N bytes), scales into `scales` (L f32). The fast path uses `workspace`
// for the code table when it holds kTableBytes.
template <typename Kernel, typename ScaleOf>
void EncodeTensor(const KvTensorView& t, uint8_t* q, uint8_t* scales, CodecPath path,
                  absl::Span<uint8_t> workspace, ThreadPool* pool, const ScaleOf& scale_of) {
  const int64_t le = t.geom.layer_elements(), layers = t.geom.layers;
  if (path == CodecPath::kReference) {
    for (int64_t l = 0; l < layers; ++l) {
      const uint16_t* x = t.layer(l);
      const float scale = scale_of(AbsMaxScalar(x, le));
      StoreF32(scales + 4 * l, scale);
      const Kernel k(scale);
      for (int64_t i = 0; i < le; ++i) q[l * le + i] = k.Code(x[i]);
    }
    return;
  }
  const bool avx2 = HasAvx2F16c();
  auto code_block = [avx2](const auto& k, const uint16_t* x, int64_t n, uint8_t* out,
                           const uint16_t* next) {
    return avx2 ? CodeBlockAvx2(k, x, n, out, next) : CodeBlockScalar(k, x, n, out, next);
  };
  uint16_t top = AbsMaxBits(t.layer(0), le, pool);
  for (int64_t l = 0; l < layers; ++l) {
    const float scale = scale_of(HalfToFloat(top));
    StoreF32(scales + 4 * l, scale);
    const Kernel k(scale);
    // Tabulate when the layer has several elements per table entry (an entry costs about as
    // much as coding an element directly) and no inf/NaN (where sign symmetry may not hold).
    const int64_t per_sign = int64_t{top} + 1;
    const bool table = Kernel::kTable && avx2 && workspace.size() >= kTableBytes &&
                       top < 0x7C00 && le >= 4 * per_sign;
    if (table) {
      constexpr int64_t kChunk = 256;
      uint8_t* tab = workspace.data();
      ParallelFor(pool, (per_sign + kChunk - 1) / kChunk, [&](int64_t c0, int64_t c1) {
        alignas(32) uint16_t pattern[kChunk];
        const int64_t end = std::min(c1 * kChunk, per_sign);
        for (int64_t first = c0 * kChunk; first < end; first += kChunk) {
          const int64_t len = std::min(kChunk, end - first);
          for (int64_t j = 0; j < len; ++j) pattern[j] = static_cast<uint16_t>(first + j);
          code_block(k, pattern, len, tab + first, nullptr);
          for (int64_t j = 0; j < len; ++j) tab[0x8000 + first + j] = tab[first + j] | 0x80;
        }
      }, 16);
    }
    const uint16_t* x = t.layer(l);
    const uint16_t* next = l + 1 < layers ? t.layer(l + 1) : nullptr;
    std::atomic<uint16_t> best{0};
    ParallelFor(pool, (le + kBlock - 1) / kBlock, [&](int64_t b0, int64_t b1) {
      const int64_t i = b0 * kBlock, len = std::min(le, b1 * kBlock) - i;
      const uint16_t* nx = next ? next + i : nullptr;
      AtomicMax(best, table ? code_block(TableKernel{workspace.data()}, x + i, len,
                                         q + l * le + i, nx)
                            : code_block(k, x + i, len, q + l * le + i, nx));
    });
    top = best.load(std::memory_order_relaxed);
  }
}

// ---- INT8 ----

struct Int8Kernel {
  static constexpr bool kTable = false;  // measured: the division kernel keeps up with the memory
  explicit Int8Kernel(float scale) : scale(scale) {}
  float scale;
  uint8_t Code(uint16_t h) const { return Int8Code(HalfToFloat(h) / scale); }
  KVS_AVX2 __m256i Codes32(const uint16_t* x) const {
    const __m256 vs = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-127.0f),
                 hi = _mm256_set1_ps(127.0f);
    __m256i c[4];
    for (int k = 0; k < 4; ++k) {
      const __m256 v =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 8 * k)));
      const __m256 r =
          _mm256_round_ps(_mm256_div_ps(v, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      c[k] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
    }
    const __m256i w =
        _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    return _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  }
};

inline void DequantizeScalar(const int8_t* q, int64_t n, float scale, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToHalf(static_cast<float>(q[i]) * scale);
}

KVS_AVX2 inline void DequantizeAvx2(const int8_t* q, int64_t n, float scale, uint16_t* out) {
  const __m256 vs = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
    const __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    const __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
    const __m128i h0 = _mm256_cvtps_ph(_mm256_mul_ps(f0, vs), _MM_FROUND_TO_NEAREST_INT);
    const __m128i h1 = _mm256_cvtps_ph(_mm256_mul_ps(f1, vs), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_set_m128i(h1, h0));
  }
  DequantizeScalar(q + i, n - i, scale, out + i);
}

#undef KVS_AVX2

// ---- INT8 tensors ----

// Encodes tensor t: codes to q (N bytes), per-layer scales to `scales` (L f32).
inline void EncodeInt8Tensor(const KvTensorView& t, uint8_t* q, uint8_t* scales, CodecPath path,
                             ThreadPool* pool) {
  EncodeTensor<Int8Kernel>(t, q, scales, path, {}, pool, Int8Scale);
}

// Decodes codes q (N bytes) with per-layer `scales` into out. Scales are not validated: a corrupt
// scale yields wrong values, never an out-of-bounds access.
inline void DecodeInt8Tensor(const uint8_t* q, const uint8_t* scales,
                             const MutableKvTensorView& out, CodecPath path, ThreadPool* pool) {
  const int64_t le = out.geom.layer_elements();
  const int8_t* codes = reinterpret_cast<const int8_t*>(q);
  if (path == CodecPath::kReference) {
    for (int64_t l = 0; l < out.geom.layers; ++l) {
      DequantizeScalar(codes + l * le, le, LoadF32(scales + 4 * l), out.layer(l));
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
      const int8_t* src = codes + l * le + i;
      uint16_t* dst = out.layer(l) + i;
      avx2 ? DequantizeAvx2(src, len, scale, dst) : DequantizeScalar(src, len, scale, dst);
    }
  });
}

}  // namespace kvs::int8l
