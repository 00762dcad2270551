#include "common/half/half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace kvs {
namespace {

TEST(Half, KnownValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // tie between max half and inf rounds to even: inf
  EXPECT_EQ(FloatToHalf(5.9604645e-8f), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(2.9802322e-8f), 0x0000);  // half of it: tie to even (0)
  EXPECT_EQ(FloatToHalf(0.1f), 0x2E66);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(NAN))));
  EXPECT_EQ(HalfToFloat(0x7C00), INFINITY);
}

// Every half value converts to float and back unchanged; bulk (F16C) equals scalar everywhere.
TEST(Half, AllValuesRoundTripAndBulkMatchesScalar) {
  std::vector<uint16_t> h(65536);
  for (int i = 0; i < 65536; ++i) h[i] = static_cast<uint16_t>(i);
  std::vector<float> f(65536);
  HalfToFloatN(h.data(), f.data(), h.size());
  for (int i = 0; i < 65536; ++i) {
    const float s = HalfToFloat(h[i]);
    if (std::isnan(s)) {
      ASSERT_TRUE(std::isnan(f[i]));
      continue;
    }
    ASSERT_EQ(FloatToBits(f[i]), FloatToBits(s)) << i;
    ASSERT_EQ(FloatToHalf(s), h[i]) << i;
  }
  // Float -> half on a dense sweep of float bit patterns, including ties.
  std::vector<float> src;
  for (uint32_t u = 0x33000000u; u < 0x47800000u; u += 0x1FFu) src.push_back(BitsToFloat(u));
  for (uint32_t u = 0x38000000u; u < 0x38900000u; u += 0x1000u) src.push_back(BitsToFloat(u));
  std::vector<uint16_t> bulk(src.size());
  FloatToHalfN(src.data(), bulk.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    ASSERT_EQ(bulk[i], FloatToHalf(src[i])) << src[i];
    if (bulk[i] == 0x7C00) {  // overflow to inf only from the tie point 65520 up
      ASSERT_GE(src[i], 65520.0f);
      continue;
    }
    const double back = HalfToFloat(bulk[i]);
    // Nearest: no other half is closer.
    const double lo = HalfToFloat(bulk[i] - 1), hi = HalfToFloat(bulk[i] + 1);
    if (bulk[i] != 0) ASSERT_LE(std::fabs(back - src[i]), std::fabs(lo - src[i]) + 1e-30);
    if (bulk[i] != 0x7BFF) {
      ASSERT_LE(std::fabs(back - src[i]), std::fabs(hi - src[i]) + 1e-30);
    }
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x3F808000u)), 0x3F80);  // tie -> even
  EXPECT_EQ(FloatToBf16(BitsToFloat(0x3F818000u)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(Bf16ToFloat(0x3F80), 1.0f);
}

}  // namespace
}  // namespace kvs
