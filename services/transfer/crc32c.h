// services/transfer/crc32c.h — CRC-32C (Castagnoli, iSCSI polynomial 0x1EDC6F41, reflected
// 0x82F63B78), as used by iSCSI (RFC 3720), ext4 and SCTP.
//
// Debian 12's abseil lacks absl/crc, so kvshuttle carries its own: SSE4.2 `crc32` instructions on
// three interleaved streams (recombined with precomputed shift tables; Mark Adler's construction)
// when the CPU has them, checked at run time, and a slicing-by-8 table fallback otherwise. Both
// give identical results; the frame layer uses it for payload and header checksums.
//
//   uint32_t c = kvs::transfer::Crc32c(data, n);
//   uint32_t c2 = kvs::transfer::Crc32cExtend(kvs::transfer::Crc32c(a, na), b, nb);  // == CRC(a‖b)
//
// Thread-safe; no allocation.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvs::transfer {

// CRC-32C of `data[0, n)` continuing from `crc` (the CRC of everything before; 0 to start).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

// The portable table implementation and the SSE4.2 one, for tests and benchmarks. Crc32cExtend
// uses the hardware version when Crc32cHardwareAvailable().
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);
uint32_t Crc32cExtendHardware(uint32_t crc, const void* data, size_t n);
bool Crc32cHardwareAvailable();

}  // namespace kvs::transfer
