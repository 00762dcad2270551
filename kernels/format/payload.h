// kernels/format/payload.h — the fixed header that opens every codec payload.
//
// Layout (little-endian, 32 bytes), then `body_bytes` of codec-specific body:
//   u32 magic 'KVSC' | u8 version | u8 codec id | u8 dtype | u8 flags |
//   u32 L | u32 H | u32 S | u32 D | u32 reserved (0) | u32 body_bytes
// Shared by the CPU and CUDA codecs; a layout change bumps kPayloadVersion.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace kvs {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kvshuttle payloads are little-endian");

inline constexpr uint32_t kPayloadMagic = 0x4353564Bu;  // "KVSC" in memory order
inline constexpr uint8_t kPayloadVersion = 1;

// Header flag bits (meaning per codec).
inline constexpr uint8_t kFlagFp8Compat = 1u << 0;   // fp8_e4m3: reference offset-uint8 path
inline constexpr uint8_t kFlagPruneZeroFill = 1u << 1;  // pruning: evicted tokens are zeros, not masked

struct PayloadHeader {
  uint32_t magic;
  uint8_t version;
  uint8_t codec;
  uint8_t dtype;
  uint8_t flags;
  uint32_t layers;
  uint32_t heads;
  uint32_t tokens;
  uint32_t head_dim;
  uint32_t reserved;
  uint32_t body_bytes;
};
static_assert(sizeof(PayloadHeader) == 32, "payload header is 32 bytes on the wire");
static_assert(std::is_trivially_copyable_v<PayloadHeader>);

inline constexpr uint64_t kPayloadHeaderBytes = sizeof(PayloadHeader);

}  // namespace kvs
