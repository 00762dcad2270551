// uniform_int8 (CODECS.md §2.5): closed-form sizes, the §9 quality bar, the per-element error
// bound, agreement with the KVShuttle reference outputs, fast == reference on every fp16 value,
// the per-layer scale rules and the body layout.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "common/half/half.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/fidelity.h"
#include "kernels/format/uniform_int8.h"
#include "tests/testing/codec_testing.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

std::unique_ptr<Codec> Make(CodecPath path = CodecPath::kFast) { return testing::MakeCodec("uniform_int8", path); }

// Per-layer step amax_l / 127 of one tensor (1 when the layer is all zeros).
std::vector<float> LayerSteps(const std::vector<uint16_t>& x, const KvGeometry& g) {
  std::vector<float> steps(g.layers);
  const int64_t le = g.layer_elements();
  for (int64_t l = 0; l < g.layers; ++l) {
    float amax = 0;
    for (int64_t i = 0; i < le; ++i) amax = std::max(amax, std::fabs(HalfToFloat(x[l * le + i])));
    steps[l] = amax == 0 ? 1.0f : amax / 127.0f;
  }
  return steps;
}

// Half an fp16 ulp at |v| (the rounding of the decoded value to fp16).
float HalfUlp(float v) {
  const uint16_t h = FloatToHalf(std::fabs(v));
  return (HalfToFloat(static_cast<uint16_t>(h + 1)) - HalfToFloat(h)) / 2;
}

TEST(UniformInt8, ClosedFormSizes) {
  struct Case {
    KvGeometry g;
    double ratio;  // CODECS.md §1.5 (2N data bytes; ours adds the header and 8·L scale bytes)
  };
  const Case cases[] = {
      {{32, 8, 1024, 128}, 2.000},  // Llama-3.1-8B
      {{4, 2, 32, 64}, 1.996},      // KVShuttle "small"
      {{3, 2, 130, 128}, 1.999},
      {{2, 4, 50, 96}, 1.998},
  };
  auto codec = Make();
  ASSERT_NE(codec, nullptr);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.g.ToString());
    KVS_ASSERT_OK_AND_ASSIGN(size_t bytes, codec->MaxEncodedBytes(c.g));
    const uint64_t n = c.g.elements();
    EXPECT_EQ(bytes, 32 + 2 * n + 8 * c.g.layers);
    EXPECT_EQ(bytes, 32 + format::UniformInt8BodyBytes(c.g));
    EXPECT_NEAR(static_cast<double>(c.g.raw_bytes()) / bytes, c.ratio, 2e-3);
  }
}

TEST(UniformInt8, RoundTrip_QualityAndErrorBound) {
  struct Case {
    KvGeometry g;
    SynthKind kind;
    uint64_t seed;
    double min_cos;  // §9: key cosine > 0.99 on N(0,1) [4,2,32,64] seed 42
  };
  const Case cases[] = {
      {{4, 2, 32, 64}, SynthKind::kGaussian, 42, 0.99},
      {{3, 2, 130, 128}, SynthKind::kRealistic, 7, 0.99},
      {{2, 8, 512, 128}, SynthKind::kRealistic, 3, 0.99},  // big layers, several blocks
  };
  ThreadPool pool(2);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    ASSERT_NE(codec, nullptr);
    for (const Case& c : cases) {
      SCOPED_TRACE(c.g.ToString());
      OwnedKv kv = MakeSyntheticKv(c.g, c.seed, c.kind);
      KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*codec, kv.view(), &pool));
      const double ratio = static_cast<double>(c.g.raw_bytes()) / payload.size();
      EXPECT_GT(ratio, 1.5);
      EXPECT_LT(ratio, 2.5);
      OwnedKv out = OwnedKv::Zeros(c.g);
      KVS_ASSERT_OK(DecodeFromVector(*codec, payload, out.mutable_view(), &pool));
      const Fidelity f = MeasureFidelity(kv.view(), out.view());
      EXPECT_GT(f.mean_key_cosine, c.min_cos);
      EXPECT_GT(f.mean_value_cosine, c.min_cos);
      // |x̂ - x| <= step/2 (rounding to the grid) + half an fp16 ulp (rounding x̂ to fp16).
      for (const auto* t : {&kv.k, &kv.v}) {
        const auto& o = t == &kv.k ? out.k : out.v;
        const std::vector<float> steps = LayerSteps(*t, c.g);
        for (size_t i = 0; i < t->size(); ++i) {
          const float x = HalfToFloat((*t)[i]), y = HalfToFloat(o[i]);
          const float step = steps[i / c.g.layer_elements()];
          ASSERT_LE(std::fabs(x - y), step * 0.5f * (1 + 1e-5f) + HalfUlp(y)) << "i=" << i;
        }
      }
    }
  }
}

// Golden outputs of the KVShuttle reference (NumPy). Tolerance: where we differ, by at most one
// quantisation step amax_l / 127 plus one fp16 ulp (one code apart, each value rounded to fp16).
TEST(UniformInt8, Golden_AtMostOneStepApart) {
  auto codec = Make();
  ASSERT_NE(codec, nullptr);
  for (const std::string& tag : testing::GoldenTags()) {
    SCOPED_TRACE(tag);
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv in, testing::LoadGoldenInput(tag));
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv want, testing::LoadGoldenOutput(tag, "uniform_int8"));
    OwnedKv got = OwnedKv::Zeros(in.geom);
    KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*codec, in.view(), nullptr));
    KVS_ASSERT_OK(DecodeFromVector(*codec, payload, got.mutable_view(), nullptr));
    int64_t differ = 0;
    for (int t = 0; t < 2; ++t) {
      const auto& x = t ? in.v : in.k;
      const auto& a = t ? got.v : got.k;
      const auto& b = t ? want.v : want.k;
      const std::vector<float> steps = LayerSteps(x, in.geom);
      for (size_t i = 0; i < a.size(); ++i) {
        if (a[i] == b[i]) continue;
        ++differ;
        const float ya = HalfToFloat(a[i]), yb = HalfToFloat(b[i]);
        EXPECT_LE(std::fabs(ya - yb), steps[i / in.geom.layer_elements()] + 2 * HalfUlp(ya))
            << "i=" << i;
      }
    }
    EXPECT_LE(differ, static_cast<int64_t>(0.001 * 2 * in.k.size()));
    std::cout << "[ golden ] uniform_int8 " << tag << ": " << differ << " of " << 2 * in.k.size()
              << " elements differ\n";
  }
}

// Fast and reference encoders write the same bytes (same division and rounding), on synthetic
// caches and on every fp16 pattern.
TEST(UniformInt8, FastEqualsReference_Bytes) {
  std::vector<OwnedKv> inputs;
  inputs.push_back(MakeSyntheticKv({4, 2, 32, 64}, 42, SynthKind::kGaussian));
  inputs.push_back(MakeSyntheticKv({2, 8, 512, 128}, 5, SynthKind::kRealistic));
  // Every finite fp16 value, both signs, in 128K-element layers, and layers whose max sits lower
  // in the fp16 range.
  OwnedKv all = OwnedKv::Zeros({2, 1, 1024, 128});
  auto finite = [](uint32_t h) {  // inf/NaN -> a finite value (NaN inputs are unspecified)
    h &= 0xFFFF;
    return static_cast<uint16_t>((h & 0x7C00) == 0x7C00 ? h & 0x83FF : h);
  };
  const uint32_t le = 1024 * 128;
  for (uint32_t i = 0; i < le; ++i) {
    all.k[i] = finite(i);
    all.v[i] = static_cast<uint16_t>(finite(i * 7919) & 0xBFFF);
    all.k[le + i] = static_cast<uint16_t>(finite(i) & 0x87FF);
    all.v[le + i] = finite(i * 40503);
  }
  inputs.push_back(std::move(all));
  auto ref = Make(CodecPath::kReference), fast = Make(CodecPath::kFast);
  ThreadPool pool(2);
  for (const OwnedKv& kv : inputs) {
    SCOPED_TRACE(kv.geom.ToString());
    KVS_ASSERT_OK_AND_ASSIGN(auto a, EncodeToVector(*ref, kv.view(), nullptr));
    KVS_ASSERT_OK_AND_ASSIGN(auto b, EncodeToVector(*fast, kv.view(), &pool));
    KVS_ASSERT_OK_AND_ASSIGN(auto c, EncodeToVector(*fast, kv.view(), nullptr));
    EXPECT_TRUE(a == b);
    EXPECT_TRUE(a == c);
    OwnedKv da = OwnedKv::Zeros(kv.geom), db = OwnedKv::Zeros(kv.geom);
    KVS_ASSERT_OK(DecodeFromVector(*ref, a, da.mutable_view(), nullptr));
    KVS_ASSERT_OK(DecodeFromVector(*fast, a, db.mutable_view(), &pool));
    EXPECT_EQ(da.k, db.k);
    EXPECT_EQ(da.v, db.v);
  }
}

TEST(UniformInt8, Layout_ScalesAndSymmetricCodes) {
  const KvGeometry g{3, 1, 4, 8};
  OwnedKv kv = OwnedKv::Zeros(g);
  // Layer 0: amax 127, so scale 1: ±127 -> ±127 (never -128), ties to even; layer 1 all zeros
  // (scale 1); layer 2: 0.5 and -3.
  kv.k[0] = FloatToHalf(127.0f);
  kv.k[1] = FloatToHalf(-127.0f);
  kv.k[2] = FloatToHalf(63.5f);
  kv.k[3] = FloatToHalf(62.5f);
  kv.k[4] = FloatToHalf(-0.5f);
  kv.k[64] = FloatToHalf(0.5f);
  kv.k[65] = FloatToHalf(-3.0f);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    const uint8_t* body = p.data() + 32;
    const int64_t n = g.elements();
    EXPECT_EQ(static_cast<int8_t>(body[0]), 127);
    EXPECT_EQ(static_cast<int8_t>(body[1]), -127);
    EXPECT_EQ(static_cast<int8_t>(body[2]), 64);
    EXPECT_EQ(static_cast<int8_t>(body[3]), 62);
    EXPECT_EQ(static_cast<int8_t>(body[4]), 0);
    EXPECT_EQ(static_cast<int8_t>(body[65]), -127);
    EXPECT_EQ(static_cast<int8_t>(body[64]), 21);  // 0.5 / (3/127) = 21.17
    float ks[3], vs[3];
    std::memcpy(ks, body + 2 * n, 12);
    std::memcpy(vs, body + 2 * n + 12, 12);
    EXPECT_EQ(ks[0], 1.0f);
    EXPECT_EQ(ks[1], 1.0f);
    EXPECT_EQ(ks[2], 3.0f / 127.0f);
    for (float s : vs) EXPECT_EQ(s, 1.0f);  // V is all zeros
  }
}

TEST(UniformInt8, Malformed_OtherCodecsPayloadAndCorruptScales) {
  const KvGeometry g{2, 2, 16, 64};
  OwnedKv kv = MakeSyntheticKv(g, 11);
  auto codec = Make();
  OwnedKv out = OwnedKv::Zeros(g);
  // fp8_e4m3 has the same body size for the same geometry: the codec id must still reject it.
  KVS_ASSERT_OK_AND_ASSIGN(auto fp8, CodecRegistry::Builtin().Create("fp8_e4m3"));
  KVS_ASSERT_OK_AND_ASSIGN(auto p8, EncodeToVector(*fp8, kv.view(), nullptr));
  EXPECT_THAT(DecodeFromVector(*codec, p8, out.mutable_view(), nullptr),
              testing::StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("codec")));
  // NaN / infinite scales are not validated: decode succeeds, out of bounds never.
  KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
  const size_t scales = 32 + 2 * g.elements();
  const float bad[] = {NAN, INFINITY, -1.0f, 0.0f};
  for (float s : bad) {
    std::vector<uint8_t> q = p;
    for (int l = 0; l < 4; ++l) std::memcpy(q.data() + scales + 4 * l, &s, 4);
    EXPECT_THAT(DecodeFromVector(*codec, q, out.mutable_view(), nullptr), testing::IsOk());
  }
}

}  // namespace
}  // namespace kvs
