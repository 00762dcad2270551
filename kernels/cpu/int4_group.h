// kernels/cpu/int4_group.h — internal: the grouped asymmetric INT4 quantiser shared by
// uniform_int4, mixed_k8v4 (values), cascade_prune50_int4 and palu_int4 (CODECS.md §2.6).
//
// n values, read in order, zero-padded to a multiple of 128 and cut into groups of 128. Per
// group: scale = (max - min) / 15, zero = min (max == min => scale = 1); q = clip(rint((x - zero)
// / scale), 0, 15). Codes packed two per byte, element 2j in the high nibble. Sections:
//   packed: PackedBytes(n) = Groups(n) * 64 bytes; scales, zeros: Groups(n) little-endian f32 each.
// Scales and zeros are written and read through byte pointers (payload sections are unaligned).
#pragma once

#include <cstdint>

#include "common/thread_pool/thread_pool.h"
#include "kernels/codec.h"

namespace kvs::int4g {

inline constexpr int64_t kGroup = 128;
inline int64_t Groups(int64_t n) { return (n + kGroup - 1) / kGroup; }
inline int64_t PackedBytes(int64_t n) { return Groups(n) * (kGroup / 2); }
// packed + scales + zeros
inline int64_t TotalBytes(int64_t n) { return PackedBytes(n) + 8 * Groups(n); }

// Encodes n fp16 values (bits). scales/zeros each receive Groups(n) f32.
void EncodeF16(const uint16_t* x, int64_t n, uint8_t* packed, uint8_t* scales, uint8_t* zeros,
               CodecPath path, ThreadPool* pool);
// Encodes n fp32 values (palu_int4 quantises its factors from fp32).
void EncodeF32(const float* x, int64_t n, uint8_t* packed, uint8_t* scales, uint8_t* zeros,
               CodecPath path, ThreadPool* pool);
// Decodes n values to fp16 bits: q * scale + zero computed in fp32, rounded to fp16 (RNE).
void DecodeF16(const uint8_t* packed, const uint8_t* scales, const uint8_t* zeros, int64_t n,
               uint16_t* out, CodecPath path, ThreadPool* pool);

}  // namespace kvs::int4g
