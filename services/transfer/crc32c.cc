#include "services/transfer/crc32c.h"

#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace kvs::transfer {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

// Slicing-by-8 tables, built at compile time.
struct Tables {
  uint32_t t[8][256];
};

constexpr Tables MakeTables() {
  Tables tb{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    tb.t[0][n] = c;
  }
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = tb.t[0][n];
    for (int k = 1; k < 8; ++k) {
      c = tb.t[0][c & 0xff] ^ (c >> 8);
      tb.t[k][n] = c;
    }
  }
  return tb;
}

constexpr Tables kTables = MakeTables();

// ---- shift-by-zeros operators (for recombining interleaved hardware streams) ----
// Multiplying a CRC by the operator for `len` zero bytes equals running the CRC over `len` zeros.
constexpr uint32_t Gf2MatrixTimes(const uint32_t* mat, uint32_t vec) {
  uint32_t sum = 0;
  while (vec) {
    if (vec & 1) sum ^= *mat;
    vec >>= 1;
    ++mat;
  }
  return sum;
}

constexpr void Gf2MatrixSquare(uint32_t* square, const uint32_t* mat) {
  for (int n = 0; n < 32; ++n) square[n] = Gf2MatrixTimes(mat, mat[n]);
}

struct ShiftTable {
  uint32_t z[4][256];
};

// Operator for `len` zero bytes; `len` must be a power of two >= 1.
constexpr ShiftTable MakeShift(size_t len) {
  uint32_t even[32] = {};
  uint32_t odd[32] = {};
  odd[0] = kPoly;  // one zero bit
  uint32_t row = 1;
  for (int n = 1; n < 32; ++n) {
    odd[n] = row;
    row <<= 1;
  }
  Gf2MatrixSquare(even, odd);  // two zero bits
  Gf2MatrixSquare(odd, even);  // four zero bits
  // Each squaring doubles: the first puts one zero byte in `even`.
  bool in_even = false;
  do {
    Gf2MatrixSquare(even, odd);
    len >>= 1;
    if (len == 0) {
      in_even = true;
      break;
    }
    Gf2MatrixSquare(odd, even);
    len >>= 1;
  } while (len);
  const uint32_t* op = in_even ? even : odd;
  ShiftTable st{};
  for (uint32_t n = 0; n < 256; ++n) {
    st.z[0][n] = Gf2MatrixTimes(op, n);
    st.z[1][n] = Gf2MatrixTimes(op, n << 8);
    st.z[2][n] = Gf2MatrixTimes(op, n << 16);
    st.z[3][n] = Gf2MatrixTimes(op, n << 24);
  }
  return st;
}

constexpr size_t kLong = 8192;
constexpr size_t kShort = 256;
constexpr ShiftTable kLongShift = MakeShift(kLong);
constexpr ShiftTable kShortShift = MakeShift(kShort);

inline uint32_t Shift(const ShiftTable& st, uint32_t crc) {
  return st.z[0][crc & 0xff] ^ st.z[1][(crc >> 8) & 0xff] ^ st.z[2][(crc >> 16) & 0xff] ^
         st.z[3][crc >> 24];
}

inline uint64_t Load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t HwImpl(uint32_t crc, const unsigned char* next,
                                                  size_t len) {
  uint64_t crc0 = crc ^ 0xFFFFFFFFu;
  while (len && (reinterpret_cast<uintptr_t>(next) & 7) != 0) {
    crc0 = _mm_crc32_u8(static_cast<uint32_t>(crc0), *next++);
    --len;
  }
  // Three independent streams hide the crc32 instruction's 3-cycle latency.
  while (len >= 3 * kLong) {
    uint64_t crc1 = 0, crc2 = 0;
    const unsigned char* end = next + kLong;
    do {
      crc0 = _mm_crc32_u64(crc0, Load64(next));
      crc1 = _mm_crc32_u64(crc1, Load64(next + kLong));
      crc2 = _mm_crc32_u64(crc2, Load64(next + 2 * kLong));
      next += 8;
    } while (next < end);
    crc0 = Shift(kLongShift, static_cast<uint32_t>(crc0)) ^ crc1;
    crc0 = Shift(kLongShift, static_cast<uint32_t>(crc0)) ^ crc2;
    next += 2 * kLong;
    len -= 3 * kLong;
  }
  while (len >= 3 * kShort) {
    uint64_t crc1 = 0, crc2 = 0;
    const unsigned char* end = next + kShort;
    do {
      crc0 = _mm_crc32_u64(crc0, Load64(next));
      crc1 = _mm_crc32_u64(crc1, Load64(next + kShort));
      crc2 = _mm_crc32_u64(crc2, Load64(next + 2 * kShort));
      next += 8;
    } while (next < end);
    crc0 = Shift(kShortShift, static_cast<uint32_t>(crc0)) ^ crc1;
    crc0 = Shift(kShortShift, static_cast<uint32_t>(crc0)) ^ crc2;
    next += 2 * kShort;
    len -= 3 * kShort;
  }
  while (len >= 8) {
    crc0 = _mm_crc32_u64(crc0, Load64(next));
    next += 8;
    len -= 8;
  }
  while (len) {
    crc0 = _mm_crc32_u8(static_cast<uint32_t>(crc0), *next++);
    --len;
  }
  return static_cast<uint32_t>(crc0) ^ 0xFFFFFFFFu;
}
#endif

bool DetectHardware() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
#else
  return false;
#endif
}

}  // namespace

bool Crc32cHardwareAvailable() {
  static const bool available = DetectHardware();  // a CPU property, computed once
  return available;
}

uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  const auto& t = kTables.t;
  uint32_t c = crc ^ 0xFFFFFFFFu;
  while (n && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    --n;
  }
  while (n >= 8) {
    const uint64_t w = Load64(p) ^ c;
    c = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^ t[4][(w >> 24) & 0xff] ^
        t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^ t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n) {
    c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    --n;
  }
  return c ^ 0xFFFFFFFFu;
}

uint32_t Crc32cExtendHardware(uint32_t crc, const void* data, size_t n) {
#if defined(__x86_64__)
  if (Crc32cHardwareAvailable()) return HwImpl(crc, static_cast<const unsigned char*>(data), n);
#endif
  return Crc32cExtendPortable(crc, data, n);
}

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
#if defined(__x86_64__)
  if (Crc32cHardwareAvailable()) return HwImpl(crc, static_cast<const unsigned char*>(data), n);
#endif
  return Crc32cExtendPortable(crc, data, n);
}

}  // namespace kvs::transfer
