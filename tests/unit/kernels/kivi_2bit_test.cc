// kivi_2bit: closed-form sizes (CODECS.md §1.5), the payload layout on a hand-computed case,
// the §9 quality floors, the golden outputs within one quantisation step, the fast path writing
// the reference's bytes, and the AVX2 row kernels (kernels/cpu/pack2bit.h) equal to the portable
// ones.
#include "kernels/format/kivi_2bit.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>

#include "common/half/half.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/cpu/pack2bit.h"
#include "kernels/format/bytes.h"
#include "tests/testing/codec_testing.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

using testing::Cosine;
using testing::Ulp16;

constexpr uint64_t kHeader = 32;

std::unique_ptr<Codec> Make(CodecPath path) { return testing::MakeCodec("kivi_2bit", path); }

TEST(Kivi2Bit, ClosedFormSizes) {
  struct Case {
    KvGeometry g;
    double ratio;  // CODECS.md §1.5: raw bytes / body bytes (the reference ratio counts data only)
  };
  const Case cases[] = {
      {{32, 8, 1024, 128}, 7.014},  // Llama-3.1-8B
      {{32, 8, 128, 128}, 6.40},
      {{32, 32, 1024, 96}, 6.77},  // Phi-3.5
      {{24, 8, 256, 128}, 6.74},   // the KVShuttle "medium" fixture
  };
  auto codec = Make(CodecPath::kFast);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.g.ToString());
    const uint64_t n = c.g.elements(), lh = c.g.layers * c.g.heads;
    const uint64_t data = 2 * ((n + 3) / 4) + 8 * lh * c.g.head_dim + 8 * lh * c.g.tokens;
    KVS_ASSERT_OK_AND_ASSIGN(size_t bytes, codec->MaxEncodedBytes(c.g));
    EXPECT_EQ(bytes, kHeader + data);
    EXPECT_EQ(format::Kivi2BitBodyBytes(c.g), data);
    EXPECT_NEAR(static_cast<double>(c.g.raw_bytes()) / (bytes - kHeader), c.ratio, 0.006);
  }
  // N not a multiple of 4: each code stream rounds up on its own.
  KVS_ASSERT_OK_AND_ASSIGN(size_t odd, codec->MaxEncodedBytes({1, 1, 3, 5}));
  EXPECT_EQ(odd, kHeader + 2 * 4 + 8 * 5 + 8 * 3);
}

// A case worked by hand: K and V [1, 1, 4, 4]; codes, scales and zeros known in advance.
TEST(Kivi2Bit, PayloadLayoutByHand) {
  const KvGeometry g{1, 1, 4, 4};
  const float k[16] = {0, 1, -2, 5,  //
                       1, 1, -1, 5,  // channel 2: (-1 - -2)/2 = 0.5 rounds half-to-even to 0
                       2, 1, 0,  5,  //
                       3, 1, 4,  5};
  const float v[16] = {0,  0.5f, 2.5f, 3,   // 0.5 -> 0 and 2.5 -> 2 (half-to-even)
                       -1, -1,   -1,   -1,  // zero range: scale 1/3
                       2,  2,    2,    8,   //
                       0,  1,    2,    3};
  OwnedKv kv = OwnedKv::Zeros(g);
  for (int i = 0; i < 16; ++i) kv.k[i] = FloatToHalf(k[i]), kv.v[i] = FloatToHalf(v[i]);
  const float third = 1.0f / 3.0f;
  const uint8_t codes[8] = {
      0x00, 0x40, 0x84, 0xCC,                     // K: rows (0,0,0,0) (1,0,0,0) (2,0,1,0) (3,0,3,0)
      0x0B, 0x00, 0x03, 0x1B};                    // V: rows (0,0,2,3) (0,0,0,0) (0,0,0,3) (0,1,2,3)
  const float params[16] = {1, third, 2,  third,  // K scales per channel
                            1, third, 2,  1,      // V scales per token
                            0, 1,     -2, 5,      // K zeros
                            0, -1,    2,  0};     // V zeros
  const float k_out[16] = {0, 1, -2, 5, 1, 1, -2, 5, 2, 1, 0, 5, 3, 1, 4, 5};
  const float v_out[16] = {0, 0, 2, 3, -1, -1, -1, -1, 2, 2, 2, 8, 0, 1, 2, 3};
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    ASSERT_EQ(p.size(), kHeader + 8 + 64);
    EXPECT_EQ(std::vector<uint8_t>(p.begin() + kHeader, p.begin() + kHeader + 8),
              std::vector<uint8_t>(codes, codes + 8));
    for (int i = 0; i < 16; ++i) EXPECT_EQ(LoadF32(p.data() + kHeader + 8 + 4 * i), params[i]) << i;
    OwnedKv out = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, out.mutable_view(), nullptr));
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(HalfToFloat(out.k[i]), k_out[i]) << i;
      EXPECT_EQ(HalfToFloat(out.v[i]), v_out[i]) << i;
    }
  }
}

// The padding slots of a stream whose length is not a multiple of 4 are zero.
TEST(Kivi2Bit, PaddingIsZero) {
  const KvGeometry g{1, 1, 3, 3};  // 9 codes per tensor: 3 bytes, the last holds one code
  OwnedKv kv = MakeSyntheticKv(g, 4);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    const format::Kivi2BitSections s = format::Kivi2BitLayout(g);
    EXPECT_EQ(p[kHeader + s.k_codes + 2] & 0x3F, 0);
    EXPECT_EQ(p[kHeader + s.v_codes + 2] & 0x3F, 0);
  }
}

// CODECS.md §9: kivi's key cosine > 0.8 on the "small" fixture (N(0,1) [4,2,32,64], seed 42);
// the connector test's cosine > 0.9 for K and V; ratio > 3 on "medium" (in ClosedFormSizes).
TEST(Kivi2Bit, QualityFloorsOfTheReferenceTests) {
  const KvGeometry g{4, 2, 32, 64};
  OwnedKv kv = MakeSyntheticKv(g, 42, SynthKind::kGaussian);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    OwnedKv out = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, out.mutable_view(), nullptr));
    EXPECT_GT(Cosine(kv.k, out.k), 0.9);
    EXPECT_GT(Cosine(kv.v, out.v), 0.9);
  }
}

// Against the KVShuttle reference's outputs: where ours differs, by at most one step of the
// quantiser that produced the element (its scale, read from our payload) plus one fp16 spacing
// for the final rounding. golden_test bounds how many elements may differ (0.1 %).
TEST(Kivi2Bit, GoldenDifferencesAreAtMostOneStep) {
  for (const std::string& tag : testing::GoldenTags()) {
    SCOPED_TRACE(tag);
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv in, testing::LoadGoldenInput(tag));
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv want, testing::LoadGoldenOutput(tag, "kivi_2bit"));
    const KvGeometry& g = in.geom;
    auto codec = Make(CodecPath::kFast);
    ThreadPool pool(2);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, in.view(), &pool));
    OwnedKv got = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, got.mutable_view(), &pool));
    const format::Kivi2BitSections s = format::Kivi2BitLayout(g);
    const uint8_t* body = p.data() + kHeader;
    int64_t diff_k = 0, diff_v = 0;
    for (int64_t e = 0; e < g.elements(); ++e) {
      const int64_t d = e % g.head_dim, row = e / g.head_dim, lh = row / g.tokens;
      if (got.k[e] != want.k[e]) {
        ++diff_k;
        const double a = HalfToFloat(got.k[e]), b = HalfToFloat(want.k[e]);
        EXPECT_LE(std::fabs(a - b),
                  LoadF32(body + s.k_scales + 4 * (lh * g.head_dim + d)) + Ulp16(b))
            << "K element " << e;
      }
      if (got.v[e] != want.v[e]) {
        ++diff_v;
        const double a = HalfToFloat(got.v[e]), b = HalfToFloat(want.v[e]);
        EXPECT_LE(std::fabs(a - b), LoadF32(body + s.v_scales + 4 * row) + Ulp16(b))
            << "V element " << e;
      }
    }
    std::cout << "[ golden   ] kivi_2bit " << tag << ": " << diff_k << " K and " << diff_v
              << " V elements differ of " << g.elements() << " each\n";
  }
}

// The fast path (threads, AVX2 or portable kernels) writes the reference's bytes, including
// geometries whose slices do not end on whole bytes of the code streams.
TEST(Kivi2Bit, FastPathWritesReferenceBytes) {
  const KvGeometry shapes[] = {{2, 3, 7, 5},   {1, 2, 13, 6}, {3, 2, 130, 128},
                               {2, 4, 50, 96}, {1, 1, 1, 1},  {5, 1, 3, 3}};
  auto ref = Make(CodecPath::kReference);
  auto fast = Make(CodecPath::kFast);
  ThreadPool pool(3);
  for (const KvGeometry& g : shapes) {
    SCOPED_TRACE(g.ToString());
    OwnedKv kv = MakeSyntheticKv(g, 11);
    KVS_ASSERT_OK_AND_ASSIGN(auto a, EncodeToVector(*ref, kv.view(), nullptr));
    KVS_ASSERT_OK_AND_ASSIGN(auto b, EncodeToVector(*fast, kv.view(), &pool));
    EXPECT_EQ(a, b);
    OwnedKv x = OwnedKv::Zeros(g), y = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*ref, a, x.mutable_view(), nullptr));
    KVS_ASSERT_OK(DecodeFromVector(*fast, a, y.mutable_view(), &pool));
    EXPECT_EQ(x.k, y.k);
    EXPECT_EQ(x.v, y.v);
  }
}

TEST(Kivi2Bit, RejectsTruncatedBody) {
  const KvGeometry g{2, 2, 9, 16};
  OwnedKv kv = MakeSyntheticKv(g, 3);
  auto codec = Make(CodecPath::kFast);
  KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
  // A body one V zero short, with the header's length adjusted to match.
  std::vector<uint8_t> shorter(p.begin(), p.end() - 4);
  StoreU32(shorter.data() + 28, LoadU32(shorter.data() + 28) - 4);
  OwnedKv out = OwnedKv::Zeros(g);
  EXPECT_THAT(DecodeFromVector(*codec, shorter, out.mutable_view(), nullptr),
              testing::StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("body")));
}

// The codec picks the AVX2 kernels whenever the CPU has them, so the portable ones (the fallback)
// are checked here against them, kernel by kernel, on lengths around the vector widths.
TEST(Kivi2Bit, Avx2RowKernelsEqualPortable) {
  if (!pack2::HasAvx2()) GTEST_SKIP() << "no AVX2/F16C on this CPU";
  using pack2::Avx2;
  using pack2::Portable;
  uint64_t state = 99;
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  for (int64_t n : {1, 3, 7, 8, 9, 15, 16, 31, 32, 33, 60, 63, 64, 67, 127, 128, 200}) {
    SCOPED_TRACE(n);
    std::vector<uint16_t> x(n), ya(n), yb(n);
    std::vector<float> zero(n), scale(n), mna(n), mxa(n), mnb(n), mxb(n);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = FloatToHalf((static_cast<int>(next() % 2001) - 1000) / 64.0f);
      zero[i] = -(next() % 100) / 7.0f;
      scale[i] = 0.05f + (next() % 1000) / 97.0f;
    }
    float lo_a, hi_a, lo_b, hi_b;
    Portable::MinMax(x.data(), n, &lo_a, &hi_a);
    Avx2::MinMax(x.data(), n, &lo_b, &hi_b);
    EXPECT_EQ(lo_a, lo_b);
    EXPECT_EQ(hi_a, hi_b);
    const int64_t rows = 3, cols = n / rows;
    Portable::ColumnMinMax(x.data(), rows, cols, cols, mna.data(), mxa.data());
    Avx2::ColumnMinMax(x.data(), rows, cols, cols, mnb.data(), mxb.data());
    EXPECT_EQ(mna, mnb);
    EXPECT_EQ(mxa, mxb);
    for (float qmax : {3.0f, 15.0f, 255.0f}) {
      std::vector<uint8_t> ca(n + 3), cb(n + 3);
      Portable::Quant(x.data(), zero.data(), scale.data(), n, qmax, ca.data());
      Avx2::Quant(x.data(), zero.data(), scale.data(), n, qmax, cb.data());
      EXPECT_EQ(ca, cb);
      Portable::QuantUniform(x.data(), zero[0], scale[0], n, qmax, ca.data());
      Avx2::QuantUniform(x.data(), zero[0], scale[0], n, qmax, cb.data());
      EXPECT_EQ(ca, cb);
      Portable::Dequant(ca.data(), scale.data(), zero.data(), n, ya.data());
      Avx2::Dequant(ca.data(), scale.data(), zero.data(), n, yb.data());
      EXPECT_EQ(ya, yb);
      Portable::DequantUniform(ca.data(), scale[1 % n], zero[1 % n], n, ya.data());
      Avx2::DequantUniform(ca.data(), scale[1 % n], zero[1 % n], n, yb.data());
      EXPECT_EQ(ya, yb);
    }
    // Packing at every alignment of the run.
    std::vector<uint8_t> codes(n), back(n);
    for (int64_t i = 0; i < n; ++i) codes[i] = next() % 4;
    for (uint64_t e = 0; e < 4; ++e) {
      std::vector<uint8_t> pa(n / 4 + 3, 0xAA), pb(n / 4 + 3, 0xAA);
      pack2::Put<Portable>(pa.data(), e, codes.data(), n);
      pack2::Put<Avx2>(pb.data(), e, codes.data(), n);
      EXPECT_EQ(pa, pb);
      pack2::Get<Avx2>(pb.data(), e, back.data(), n);
      EXPECT_EQ(back, codes);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(pack2::GetOne(pa.data(), e + i), codes[i]);
    }
  }
}

}  // namespace
}  // namespace kvs
