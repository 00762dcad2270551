// tests/testing/codec_testing.h — what the per-codec unit tests share.
//
//   MakeCodec("kivi_2bit", CodecPath::kReference)   a registry codec (nullptr + a test failure if absent)
//   Cosine(a, b)                                     cosine of two fp16 vectors, fp64 accumulation
//   Ulp16(x)                                         fp16 spacing at |x| (fixed below the smallest normal)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/half/half.h"
#include "kernels/codec.h"

namespace kvs::testing {

inline std::unique_ptr<Codec> MakeCodec(const std::string& name, CodecPath path, CodecOptions o = {}) {
  o.path = path;
  auto c = CodecRegistry::Builtin().Create(name, o);
  EXPECT_TRUE(c.ok()) << name << ": " << c.status();
  return c.ok() ? std::move(c).value() : nullptr;
}

inline double Cosine(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = HalfToFloat(a[i]), y = HalfToFloat(b[i]);
    ab += x * y, aa += x * x, bb += y * y;
  }
  return ab / std::sqrt(aa * bb);
}

inline double Ulp16(double x) {
  const double a = std::max(std::fabs(x), 6.103515625e-05);  // smallest normal: fixed spacing below
  return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(a))) - 10);
}

}  // namespace kvs::testing
