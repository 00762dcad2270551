// mixed_k8v4 (CODECS.md §2.14): keys decode exactly as uniform_int8's, values exactly as
// uniform_int4's; closed-form sizes, body layout, quality and the KVShuttle reference outputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "common/half/half.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/fidelity.h"
#include "kernels/format/mixed_k8v4.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

std::unique_ptr<Codec> Make(const std::string& name, CodecPath path = CodecPath::kFast) {
  CodecOptions o;
  o.path = path;
  auto c = CodecRegistry::Builtin().Create(name, o);
  return c.ok() ? std::move(c).value() : nullptr;
}

float HalfUlp(float v) {
  const uint16_t h = FloatToHalf(std::fabs(v));
  return (HalfToFloat(static_cast<uint16_t>(h + 1)) - HalfToFloat(h)) / 2;
}

TEST(MixedK8V4, ClosedFormSizes) {
  struct Case {
    KvGeometry g;
    double ratio;  // CODECS.md §1.5: 2.560 at D = 128 (6.25 bits per element)
  };
  const Case cases[] = {{{32, 8, 1024, 128}, 2.560},
                        {{4, 2, 32, 64}, 2.5553},
                        {{4, 2, 37, 64}, 2.5559},
                        {{2, 4, 50, 96}, 2.5583}};
  auto codec = Make("mixed_k8v4");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.g.ToString());
    KVS_ASSERT_OK_AND_ASSIGN(size_t bytes, codec->MaxEncodedBytes(c.g));
    const uint64_t n = c.g.elements(), groups = (n + 127) / 128;
    EXPECT_EQ(bytes, 32 + n + 72 * groups + 4 * c.g.layers);
    EXPECT_EQ(bytes, 32 + format::MixedK8V4BodyBytes(c.g));
    EXPECT_NEAR(static_cast<double>(c.g.raw_bytes()) / bytes, c.ratio, 1e-3);
  }
}

// K through mixed_k8v4 == K through uniform_int8; V == V through uniform_int4; on both paths.
TEST(MixedK8V4, RoundTrip_KeysAsInt8ValuesAsInt4) {
  struct Case {
    KvGeometry g;
    SynthKind kind;
    uint64_t seed;
  };
  const Case cases[] = {{{4, 2, 32, 64}, SynthKind::kGaussian, 42},
                        {{3, 2, 130, 128}, SynthKind::kRealistic, 7},
                        {{2, 4, 50, 96}, SynthKind::kRealistic, 123},
                        {{2, 8, 512, 128}, SynthKind::kRealistic, 3}};
  ThreadPool pool(2);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto mixed = Make("mixed_k8v4", path), i8 = Make("uniform_int8", path),
         i4 = Make("uniform_int4", path);
    for (const Case& c : cases) {
      SCOPED_TRACE(c.g.ToString());
      OwnedKv kv = MakeSyntheticKv(c.g, c.seed, c.kind);
      OwnedKv m = OwnedKv::Zeros(c.g), a = OwnedKv::Zeros(c.g), b = OwnedKv::Zeros(c.g);
      for (auto [codec, out] : {std::pair{mixed.get(), &m}, std::pair{i8.get(), &a},
                                std::pair{i4.get(), &b}}) {
        KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), &pool));
        KVS_ASSERT_OK(DecodeFromVector(*codec, p, out->mutable_view(), &pool));
      }
      EXPECT_EQ(m.k, a.k);
      EXPECT_EQ(m.v, b.v);
      const Fidelity f = MeasureFidelity(kv.view(), m.view());
      EXPECT_GT(f.mean_key_cosine, 0.99);
      EXPECT_GT(f.mean_value_cosine, 0.99);
    }
  }
}

TEST(MixedK8V4, Layout_KCodesThenVInt4ThenKScales) {
  const KvGeometry g{2, 1, 1, 128};  // N = 256: 2 V groups
  OwnedKv kv = OwnedKv::Zeros(g);
  for (int i = 0; i < 256; ++i) {
    kv.k[i] = FloatToHalf(i < 128 ? 127.0f - i : 0.0f);  // layer 0 amax 127 (scale 1), layer 1 zero
    kv.v[i] = FloatToHalf(i < 128 ? 2.0f : static_cast<float>(i % 16));
  }
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*Make("mixed_k8v4", path), kv.view(), nullptr));
    const uint8_t* b = p.data() + 32;
    auto f32 = [&](size_t off) { float v; std::memcpy(&v, b + off, 4); return v; };
    // Kq 256 | Vpacked 128 | Vscales 8 | Vzeros 8 | Kscales 8
    ASSERT_EQ(p.size(), 32u + 256 + 128 + 8 + 8 + 8);
    EXPECT_EQ(static_cast<int8_t>(b[0]), 127);
    EXPECT_EQ(static_cast<int8_t>(b[127]), 0);
    EXPECT_EQ(b[256], 0x00);         // constant V group: codes 0
    EXPECT_EQ(b[256 + 64], 0x01);    // 0, 1 with scale 1
    EXPECT_EQ(b[256 + 127], 0xEF);   // 14, 15
    EXPECT_EQ(f32(384), 1.0f);       // V scales
    EXPECT_EQ(f32(388), 1.0f);
    EXPECT_EQ(f32(392), 2.0f);       // V zeros
    EXPECT_EQ(f32(396), 0.0f);
    EXPECT_EQ(f32(400), 1.0f);       // K scales: 127 / 127, all-zero layer -> 1
    EXPECT_EQ(f32(404), 1.0f);
  }
}

// Golden outputs of the KVShuttle reference. Tolerance: where we differ, by at most one step
// (keys amax_l / 127, values (max - min) / 15 of the group) plus one fp16 ulp.
TEST(MixedK8V4, Golden_AtMostOneStepApart) {
  auto codec = Make("mixed_k8v4");
  for (const std::string& tag : testing::GoldenTags()) {
    SCOPED_TRACE(tag);
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv in, testing::LoadGoldenInput(tag));
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv want, testing::LoadGoldenOutput(tag, "mixed_k8v4"));
    OwnedKv got = OwnedKv::Zeros(in.geom);
    KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*codec, in.view(), nullptr));
    KVS_ASSERT_OK(DecodeFromVector(*codec, payload, got.mutable_view(), nullptr));
    const int64_t le = in.geom.layer_elements(), n = in.geom.elements();
    int64_t differ = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int t = 0; t < 2; ++t) {
        const uint16_t a = t ? got.v[i] : got.k[i], b = t ? want.v[i] : want.k[i];
        if (a == b) continue;
        ++differ;
        const auto& x = t ? in.v : in.k;
        float step;
        if (t == 0) {
          float amax = 0;
          for (int64_t j = (i / le) * le; j < (i / le + 1) * le; ++j) {
            amax = std::max(amax, std::fabs(HalfToFloat(x[j])));
          }
          step = amax / 127;
        } else {
          float mn = 0, mx = 0;
          for (int64_t j = (i / 128) * 128; j < (i / 128 + 1) * 128; ++j) {
            const float v = j < n ? HalfToFloat(x[j]) : 0.0f;
            mn = j == (i / 128) * 128 ? v : std::min(mn, v);
            mx = j == (i / 128) * 128 ? v : std::max(mx, v);
          }
          step = (mx - mn) / 15;
        }
        EXPECT_LE(std::fabs(HalfToFloat(a) - HalfToFloat(b)), step + 2 * HalfUlp(HalfToFloat(a)));
      }
    }
    EXPECT_LE(differ, static_cast<int64_t>(0.001 * 2 * n));
    std::cout << "[ golden ] mixed_k8v4 " << tag << ": " << differ << " of " << 2 * n
              << " elements differ\n";
  }
}

TEST(MixedK8V4, Malformed_Int8PayloadOfSameGeometryRejected) {
  const KvGeometry g{2, 2, 16, 64};
  OwnedKv kv = MakeSyntheticKv(g, 2);
  KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*Make("uniform_int8"), kv.view(), nullptr));
  OwnedKv out = OwnedKv::Zeros(g);
  EXPECT_FALSE(DecodeFromVector(*Make("mixed_k8v4"), p, out.mutable_view(), nullptr).ok());
  // A mixed payload cut to uniform_int8's length (codec id fixed up) is still rejected.
  KVS_ASSERT_OK_AND_ASSIGN(auto m, EncodeToVector(*Make("mixed_k8v4"), kv.view(), nullptr));
  std::vector<uint8_t> cut(m.begin(), m.begin() + 32 + g.elements());
  EXPECT_FALSE(DecodeFromVector(*Make("mixed_k8v4"), cut, out.mutable_view(), nullptr).ok());
}

}  // namespace
}  // namespace kvs
