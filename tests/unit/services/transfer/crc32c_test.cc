#include "services/transfer/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace kvs::transfer {
namespace {

// RFC 3720 (iSCSI) appendix B.4 test vectors, plus the classic "123456789" check value.
TEST(Crc32c, Rfc3720Vectors) {
  uint8_t buf[32];
  std::memset(buf, 0, sizeof buf);
  EXPECT_EQ(Crc32c(buf, 32), 0x8A9136AAu);
  std::memset(buf, 0xFF, sizeof buf);
  EXPECT_EQ(Crc32c(buf, 32), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(buf, 32), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(Crc32c(buf, 32), 0x113FDB5Cu);
  const uint8_t read_pdu[48] = {
      0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
      0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(Crc32c(read_pdu, sizeof read_pdu), 0xD9963A56u);
  const std::string check = "123456789";
  EXPECT_EQ(Crc32c(check.data(), check.size()), 0xE3069283u);
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
}

TEST(Crc32c, PortableMatchesVectors) {
  uint8_t buf[32];
  std::memset(buf, 0, sizeof buf);
  EXPECT_EQ(Crc32cExtendPortable(0, buf, 32), 0x8A9136AAu);
  const std::string check = "123456789";
  EXPECT_EQ(Crc32cExtendPortable(0, check.data(), check.size()), 0xE3069283u);
}

// The hardware path (three interleaved streams + shift recombination) agrees with the table
// path for every length class and alignment: below the short block, across short and long
// blocks, and at their boundaries.
TEST(Crc32c, HardwareMatchesPortableAcrossLengthsAndAlignments) {
  if (!Crc32cHardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  std::mt19937_64 rng(7);
  std::vector<uint8_t> data(3 * 8192 * 2 + 64);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  const size_t lengths[] = {0,    1,    7,    8,    9,    255,  256,  767,   768,   769,
                            1000, 4096, 8191, 24575, 24576, 24577, 30000, 3 * 8192 * 2};
  for (size_t off = 0; off < 8; ++off) {
    for (size_t len : lengths) {
      ASSERT_EQ(Crc32cExtendHardware(0, data.data() + off, len),
                Crc32cExtendPortable(0, data.data() + off, len))
          << "offset " << off << " length " << len;
    }
  }
}

TEST(Crc32c, ExtendEqualsWhole) {
  std::vector<uint8_t> data(100000);
  std::mt19937 rng(1);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  const uint32_t whole = Crc32c(data.data(), data.size());
  for (size_t split : {size_t{0}, size_t{1}, size_t{777}, size_t{50000}, data.size()}) {
    const uint32_t a = Crc32c(data.data(), split);
    EXPECT_EQ(Crc32cExtend(a, data.data() + split, data.size() - split), whole) << split;
  }
}

TEST(Crc32c, DetectsEverySingleBitFlip) {
  std::vector<uint8_t> data(4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31);
  const uint32_t c = Crc32c(data.data(), data.size());
  for (size_t bit = 0; bit < data.size() * 8; bit += 97) {
    data[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    EXPECT_NE(Crc32c(data.data(), data.size()), c) << bit;
    data[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
}

}  // namespace
}  // namespace kvs::transfer
