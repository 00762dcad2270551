// uniform_int4 (CODECS.md §2.6) and the grouped-INT4 primitive it shares with mixed_k8v4,
// cascade_prune50_int4 and palu_int4: closed-form sizes, group rules (padding, constant groups,
// half-to-even), fast == reference on fp16 and fp32 input (including the rounding-boundary
// fallback of the fast kernel and non-normal scales), the §9 bars and the reference outputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "common/half/half.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/cpu/int4_group.h"
#include "kernels/fidelity.h"
#include "kernels/format/uniform_int4.h"
#include "tests/testing/codec_testing.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

std::unique_ptr<Codec> Make(CodecPath path = CodecPath::kFast) { return testing::MakeCodec("uniform_int4", path); }

float HalfUlp(float v) {
  const uint16_t h = FloatToHalf(std::fabs(v));
  return (HalfToFloat(static_cast<uint16_t>(h + 1)) - HalfToFloat(h)) / 2;
}

// Per-group step (max - min) / 15 of the flattened tensor, zero padding included (1 if constant).
std::vector<float> GroupSteps(const std::vector<uint16_t>& x) {
  std::vector<float> steps((x.size() + 127) / 128);
  for (size_t g = 0; g < steps.size(); ++g) {
    float mn = 0, mx = 0;
    bool first = true;
    for (size_t i = g * 128; i < (g + 1) * 128; ++i) {
      const float v = i < x.size() ? HalfToFloat(x[i]) : 0.0f;
      mn = first ? v : std::min(mn, v);
      mx = first ? v : std::max(mx, v);
      first = false;
    }
    steps[g] = mx == mn ? 1.0f : (mx - mn) / 15.0f;
  }
  return steps;
}

// The three int4 sections of n values.
struct Int4Buf {
  explicit Int4Buf(int64_t n)
      : n(n), bytes(int4g::TotalBytes(n)) {}
  int64_t n;
  std::vector<uint8_t> bytes;
  uint8_t* packed() { return bytes.data(); }
  uint8_t* scales() { return bytes.data() + int4g::PackedBytes(n); }
  uint8_t* zeros() { return scales() + 4 * int4g::Groups(n); }
  int code(int64_t i) const { return i % 2 ? bytes[i / 2] & 0xF : bytes[i / 2] >> 4; }
  float scale(int64_t g) { float s; std::memcpy(&s, scales() + 4 * g, 4); return s; }
  float zero(int64_t g) { float z; std::memcpy(&z, zeros() + 4 * g, 4); return z; }
};

TEST(UniformInt4, ClosedFormSizes) {
  struct Case {
    KvGeometry g;
    double ratio;  // CODECS.md §1.5: 3.556 at D = 128
  };
  const Case cases[] = {{{32, 8, 1024, 128}, 3.556},
                        {{24, 8, 256, 128}, 3.556},  // "medium": §9 wants (3.0, 5.0)
                        {{4, 2, 32, 64}, 3.549},
                        {{4, 2, 37, 64}, 3.550},      // N not a multiple of 128
                        {{2, 4, 50, 96}, 3.552}};
  auto codec = Make();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.g.ToString());
    KVS_ASSERT_OK_AND_ASSIGN(size_t bytes, codec->MaxEncodedBytes(c.g));
    const uint64_t n = c.g.elements(), groups = (n + 127) / 128;
    EXPECT_EQ(bytes, 32 + 2 * (64 * groups + 8 * groups));
    EXPECT_EQ(bytes, 32 + format::UniformInt4BodyBytes(c.g));
    EXPECT_EQ(static_cast<int64_t>(format::Int4SectionBytes(n)), int4g::TotalBytes(n));
    EXPECT_NEAR(static_cast<double>(c.g.raw_bytes()) / bytes, c.ratio, 1e-3);
  }
}

TEST(UniformInt4, Groups_PaddingConstantAndTiesToEven) {
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    // Group 0: 0, 0.5, 1, ..., 15 repeated (scale 1: every half-integer is a tie);
    // group 1 constant 3 (scale 1, zero 3, codes 0); group 2: 100 values in [1, 2] and 28 zeros
    // of padding, which take part in min/max (zero 0).
    const int64_t n = 356;
    std::vector<uint16_t> x(n);
    for (int i = 0; i < 128; ++i) x[i] = FloatToHalf((i % 31) * 0.5f);
    for (int i = 128; i < 256; ++i) x[i] = FloatToHalf(3.0f);
    for (int i = 256; i < n; ++i) x[i] = FloatToHalf(1.0f + (i % 10) * 0.1f);
    Int4Buf b(n);
    int4g::EncodeF16(x.data(), n, b.packed(), b.scales(), b.zeros(), path, nullptr);
    EXPECT_EQ(b.scale(0), 1.0f);
    EXPECT_EQ(b.zero(0), 0.0f);
    for (int i = 0; i < 128; ++i) {
      const float v = (i % 31) * 0.5f;
      EXPECT_EQ(b.code(i), static_cast<int>(std::nearbyint(v))) << v;  // 0.5->0, 1.5->2, 2.5->2
    }
    EXPECT_EQ(b.scale(1), 1.0f);
    EXPECT_EQ(b.zero(1), 3.0f);
    for (int i = 128; i < 256; ++i) EXPECT_EQ(b.code(i), 0);
    EXPECT_EQ(b.zero(2), 0.0f);
    EXPECT_EQ(b.scale(2), HalfToFloat(FloatToHalf(1.9f)) / 15.0f);
    for (int i = n; i < 384; ++i) EXPECT_EQ(b.code(i), 0) << "padding codes quantise 0";
    std::vector<uint16_t> out(n);
    int4g::DecodeF16(b.packed(), b.scales(), b.zeros(), n, out.data(), path, nullptr);
    for (int i = 128; i < 256; ++i) EXPECT_EQ(out[i], FloatToHalf(3.0f));
  }
}

// Fast == reference, byte for byte: random fp16 and fp32 data with tails; groups built so that
// (x - min) / scale lands on or next to half-integers (the checked-reciprocal fallback); fp32
// groups whose scale is subnormal, zero or infinite (the division-only path).
TEST(UniformInt4, FastEqualsReference_Int4Primitive) {
  uint64_t s = 88172645463325252ull;
  auto rnd = [&] { s ^= s << 13, s ^= s >> 7, s ^= s << 17; return s; };
  auto uniform = [&] { return static_cast<float>(rnd() >> 40) / 0x1p24f; };
  ThreadPool pool(2);
  std::vector<std::vector<float>> inputs;
  for (int64_t n : {1, 5, 127, 128, 129, 1000, 4096, 70001}) {
    std::vector<float> v(n);
    for (auto& e : v) e = (uniform() - 0.5f) * 8;
    inputs.push_back(v);
  }
  {  // near ties: min 0, max 15 * step, values (k + 1/2) * step (+- a few ulps)
    std::vector<float> v;
    for (int g = 0; g < 3000; ++g) {
      const float step = std::ldexp(1.0f + uniform(), static_cast<int>(rnd() % 12) - 6);
      for (int i = 0; i < 128; ++i) {
        float e = (static_cast<float>(rnd() % 15) + 0.5f) * step;
        if (i < 2) e = i == 0 ? 0.0f : 15 * step;
        if (i > 1) e = BitsToFloat(FloatToBits(e) + static_cast<int>(rnd() % 5) - 2);
        v.push_back(g % 2 ? e : HalfToFloat(FloatToHalf(e)));
      }
    }
    inputs.push_back(v);
  }
  for (const auto& v : inputs) {
    SCOPED_TRACE(v.size());
    const int64_t n = static_cast<int64_t>(v.size());
    std::vector<uint16_t> h(n);
    for (int64_t i = 0; i < n; ++i) h[i] = FloatToHalf(v[i]);
    for (int input = 0; input < 2; ++input) {
      Int4Buf a(n), b(n);
      for (auto [buf, path, p] : {std::tuple{&a, CodecPath::kReference, (ThreadPool*)nullptr},
                                  std::tuple{&b, CodecPath::kFast, &pool}}) {
        if (input == 0) {
          int4g::EncodeF16(h.data(), n, buf->packed(), buf->scales(), buf->zeros(), path, p);
        } else {
          int4g::EncodeF32(v.data(), n, buf->packed(), buf->scales(), buf->zeros(), path, p);
        }
      }
      ASSERT_TRUE(a.bytes == b.bytes) << (input ? "fp32" : "fp16");
      std::vector<uint16_t> da(n), db(n);
      int4g::DecodeF16(a.packed(), a.scales(), a.zeros(), n, da.data(), CodecPath::kReference,
                       nullptr);
      int4g::DecodeF16(a.packed(), a.scales(), a.zeros(), n, db.data(), CodecPath::kFast, &pool);
      ASSERT_EQ(da, db);
    }
  }
  // fp32 groups with tiny, zero-span and infinite ranges.
  const float specials[][2] = {{0.0f, 1e-38f}, {-1e-44f, 1e-44f}, {5.0f, 5.0f},
                               {-3e38f, 3e38f}, {-INFINITY, 1.0f}, {0.0f, INFINITY}};
  for (const auto& sp : specials) {
    const bool finite = std::isfinite(sp[0]) && std::isfinite(sp[1]);
    std::vector<float> v(256);
    for (size_t i = 0; i < v.size(); ++i) {
      const float t = static_cast<float>((i * 37) % 128) / 127.0f;
      v[i] = i % 3 == 0 ? sp[i % 2] : finite ? sp[0] * (1 - t) + sp[1] * t : t;
    }
    Int4Buf a(256), b(256);
    int4g::EncodeF32(v.data(), 256, a.packed(), a.scales(), a.zeros(), CodecPath::kReference,
                     nullptr);
    int4g::EncodeF32(v.data(), 256, b.packed(), b.scales(), b.zeros(), CodecPath::kFast, &pool);
    EXPECT_TRUE(a.bytes == b.bytes) << sp[0] << " " << sp[1];
  }
}

TEST(UniformInt4, RoundTrip_QualityAndErrorBound) {
  struct Case {
    KvGeometry g;
    SynthKind kind;
    uint64_t seed;
  };
  const Case cases[] = {{{4, 2, 32, 64}, SynthKind::kGaussian, 42},
                        {{3, 2, 130, 128}, SynthKind::kRealistic, 7},
                        {{2, 4, 50, 96}, SynthKind::kRealistic, 123}};
  ThreadPool pool(2);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    for (const Case& c : cases) {
      SCOPED_TRACE(c.g.ToString());
      OwnedKv kv = MakeSyntheticKv(c.g, c.seed, c.kind);
      KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), &pool));
      OwnedKv out = OwnedKv::Zeros(c.g);
      KVS_ASSERT_OK(DecodeFromVector(*codec, p, out.mutable_view(), &pool));
      const Fidelity f = MeasureFidelity(kv.view(), out.view());
      // Per-token 4-bit: about 0.995 on N(0,1); keys with outlier channels lose more.
      EXPECT_GT(f.mean_key_cosine, c.kind == SynthKind::kGaussian ? 0.99 : 0.95);
      EXPECT_GT(f.mean_value_cosine, 0.99);
      for (int t = 0; t < 2; ++t) {  // |x̂ - x| <= step / 2 + half an fp16 ulp
        const auto& x = t ? kv.v : kv.k;
        const auto& y = t ? out.v : out.k;
        const std::vector<float> steps = GroupSteps(x);
        for (size_t i = 0; i < x.size(); ++i) {
          const float a = HalfToFloat(x[i]), b = HalfToFloat(y[i]);
          ASSERT_LE(std::fabs(a - b), steps[i / 128] * 0.5f * (1 + 1e-5f) + HalfUlp(b)) << i;
        }
      }
    }
  }
}

// Golden outputs of the KVShuttle reference. Tolerance: where we differ, by at most one step
// (max - min) / 15 of the element's group plus one fp16 ulp.
TEST(UniformInt4, Golden_AtMostOneStepApart) {
  auto codec = Make();
  for (const std::string& tag : testing::GoldenTags()) {
    SCOPED_TRACE(tag);
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv in, testing::LoadGoldenInput(tag));
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv want, testing::LoadGoldenOutput(tag, "uniform_int4"));
    OwnedKv got = OwnedKv::Zeros(in.geom);
    KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*codec, in.view(), nullptr));
    KVS_ASSERT_OK(DecodeFromVector(*codec, payload, got.mutable_view(), nullptr));
    int64_t differ = 0;
    for (int t = 0; t < 2; ++t) {
      const auto& a = t ? got.v : got.k;
      const auto& b = t ? want.v : want.k;
      const std::vector<float> steps = GroupSteps(t ? in.v : in.k);
      for (size_t i = 0; i < a.size(); ++i) {
        if (a[i] == b[i]) continue;
        ++differ;
        const float ya = HalfToFloat(a[i]), yb = HalfToFloat(b[i]);
        EXPECT_LE(std::fabs(ya - yb), steps[i / 128] + 2 * HalfUlp(ya)) << "i=" << i;
      }
    }
    EXPECT_LE(differ, static_cast<int64_t>(0.001 * 2 * in.k.size()));
    std::cout << "[ golden ] uniform_int4 " << tag << ": " << differ << " of " << 2 * in.k.size()
              << " elements differ\n";
  }
}

TEST(UniformInt4, Layout_SectionsInReferenceOrder) {
  const KvGeometry g{1, 1, 3, 128};  // 3 groups per tensor
  OwnedKv kv = OwnedKv::Zeros(g);
  for (int i = 0; i < 384; ++i) {
    kv.k[i] = FloatToHalf(static_cast<float>(i % 128));       // groups 0..127: scale 127/15
    kv.v[i] = FloatToHalf(-static_cast<float>(i / 128) - 1);  // constant groups -1, -2, -3
  }
  KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*Make(), kv.view(), nullptr));
  const uint8_t* b = p.data() + 32;
  auto f32 = [&](size_t off) { float v; std::memcpy(&v, b + off, 4); return v; };
  // Kpacked 192 | Vpacked 192 | Kscales 12 | Vscales 12 | Kzeros 12 | Vzeros 12
  ASSERT_EQ(p.size(), 32u + 192 + 192 + 48);
  EXPECT_EQ(b[0], 0x00);        // 0, 1 -> codes 0, 0 (1 / 8.47 = 0.12)
  EXPECT_EQ(b[63], 0xFF);       // 126, 127 -> 15, 15
  EXPECT_EQ(b[192], 0x00);      // constant V groups: codes 0
  for (int gi = 0; gi < 3; ++gi) {
    EXPECT_EQ(f32(384 + 4 * gi), 127.0f / 15.0f);  // K scales
    EXPECT_EQ(f32(396 + 4 * gi), 1.0f);            // V scales
    EXPECT_EQ(f32(408 + 4 * gi), 0.0f);            // K zeros
    EXPECT_EQ(f32(420 + 4 * gi), -1.0f - gi);      // V zeros
  }
}

}  // namespace
}  // namespace kvs
