// kvquant_2bit: closed-form sizes (CODECS.md §1.5), the blob layout and the outlier tie rule on
// hand-computed cases, the §9 quality floor, the golden outputs within one quantisation step,
// the fast path writing the reference's bytes, and malformed blobs rejected.
#include "kernels/format/kvquant_2bit.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>

#include "common/half/half.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/fidelity.h"
#include "kernels/format/bytes.h"
#include "tests/testing/codec_testing.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;
using testing::Cosine;
using testing::Ulp16;

constexpr uint64_t kHeader = 32;

std::unique_ptr<Codec> Make(CodecPath path) { return testing::MakeCodec("kvquant_2bit", path); }

// Blob bytes per CODECS.md §1.5, written out independently of the format header.
uint64_t BlobBytes(const KvGeometry& g) {
  const uint64_t n_out = std::max<int64_t>(1, g.head_dim / 100),
                 rows = g.layers * g.heads * g.tokens;
  return 28 + 8 + 4 * g.head_dim + 2 * rows * n_out + (rows * (g.head_dim - n_out) + 3) / 4 +
         8 * g.layers;
}

TEST(Kvquant2Bit, ClosedFormSizes) {
  struct Case {
    KvGeometry g;
    double ratio;  // raw bytes / body bytes as in CODECS.md §1.5; 0 = not checked
  };
  const Case cases[] = {
      {{32, 8, 1024, 128}, 7.584},  // Llama-3.1-8B, CODECS.md §1.5
      {{24, 8, 256, 128}, 7.58},  // the KVShuttle "medium" fixture (§9: ratio > 3, expected 7.58)
      {{4, 2, 37, 64}, 0},        // the golden inputs (index.json data_bytes below)
      {{3, 2, 130, 128}, 0},       {{2, 4, 50, 96}, 0}, {{2, 1, 3, 250}, 0},  // n_out = 2
      {{1, 2, 5, 1}, 0},  // n_out = 1, no normal channel
  };
  auto codec = Make(CodecPath::kFast);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.g.ToString());
    KVS_ASSERT_OK_AND_ASSIGN(size_t bytes, codec->MaxEncodedBytes(c.g));
    EXPECT_EQ(bytes, kHeader + 2 * BlobBytes(c.g));
    if (c.ratio > 0) {
      EXPECT_NEAR(static_cast<double>(c.g.raw_bytes()) / (bytes - kHeader), c.ratio, 0.006);
    }
  }
  EXPECT_EQ(2 * BlobBytes({4, 2, 37, 64}), 11156u);
  EXPECT_EQ(2 * BlobBytes({3, 2, 130, 128}), 53794u);
  EXPECT_EQ(2 * BlobBytes({2, 4, 50, 96}), 21472u);
  EXPECT_EQ(format::Kvquant2BitOutliers(128), 1);
  EXPECT_EQ(format::Kvquant2BitOutliers(96), 1);
  EXPECT_EQ(format::Kvquant2BitOutliers(250), 2);
}

// K [1, 1, 2, 4] with one loud channel; V with four channels of equal mean |x|, so the tie rule
// decides: the lowest channel index becomes the outlier.
TEST(Kvquant2Bit, BlobLayoutAndTieRuleByHand) {
  const KvGeometry g{1, 1, 2, 4};
  const float k[8] = {0, 1, 9, 2, 3, 0, -9, 1};   // sums 3, 1, 18, 3: outlier 2
  const float v[8] = {1, -1, 0, 2, -1, 1, 2, 0};  // sums 2, 2, 2, 2: outlier 0
  OwnedKv kv = OwnedKv::Zeros(g);
  for (int i = 0; i < 8; ++i) kv.k[i] = FloatToHalf(k[i]), kv.v[i] = FloatToHalf(v[i]);
  struct Want {
    uint32_t outlier, normal[3];
    float outlier_values[2];
    uint8_t codes[2];
    float scale, zero;
  };
  const Want want[2] = {
      // K normal values {0,1,2 | 3,0,1}: scale 1, zero 0, codes 0,1,2,3,0,1 (+ 2 padding slots).
      {2, {0, 1, 3}, {9, -9}, {0x1B, 0x10}, 1.0f, 0.0f},
      // V normal values {-1,0,2 | 1,2,0}: scale 1, zero -1, codes 0,1,3,2,3,1.
      {0, {1, 2, 3}, {1, -1}, {0x1E, 0xD0}, 1.0f, -1.0f},
  };
  const uint64_t blob = BlobBytes(g);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    ASSERT_EQ(p.size(), kHeader + 2 * blob);
    for (int t = 0; t < 2; ++t) {
      SCOPED_TRACE(t == 0 ? "K" : "V");
      const uint8_t* b = p.data() + kHeader + t * blob;
      const uint32_t lens[7] = {8, 4, 12, 4, 2, 4, 4};
      for (int i = 0; i < 7; ++i) EXPECT_EQ(LoadU32(b + 4 * i), lens[i]) << "section " << i;
      EXPECT_EQ(LoadU32(b + 28), 1u);
      EXPECT_EQ(LoadU32(b + 32), 3u);
      EXPECT_EQ(LoadU32(b + 36), want[t].outlier);
      for (int j = 0; j < 3; ++j) EXPECT_EQ(LoadU32(b + 40 + 4 * j), want[t].normal[j]);
      for (int s = 0; s < 2; ++s) {
        uint16_t h;
        std::memcpy(&h, b + 52 + 2 * s, 2);
        EXPECT_EQ(HalfToFloat(h), want[t].outlier_values[s]);
      }
      EXPECT_EQ(b[56], want[t].codes[0]);
      EXPECT_EQ(b[57], want[t].codes[1]);
      EXPECT_EQ(LoadF32(b + 58), want[t].scale);
      EXPECT_EQ(LoadF32(b + 62), want[t].zero);
    }
    OwnedKv out = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, out.mutable_view(), nullptr));
    EXPECT_EQ(out.k, kv.k);  // every normal value sits on the grid; the outlier is fp16
    EXPECT_EQ(out.v, kv.v);
  }
}

// CODECS.md §9: key cosine > 0.8 on the "small" fixture (N(0,1) [4,2,32,64], seed 42).
TEST(Kvquant2Bit, QualityFloorOfTheReferenceTests) {
  const KvGeometry g{4, 2, 32, 64};
  OwnedKv kv = MakeSyntheticKv(g, 42, SynthKind::kGaussian);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    OwnedKv out = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, out.mutable_view(), nullptr));
    EXPECT_GT(Cosine(kv.k, out.k), 0.8);
  }
}

// Against the KVShuttle reference's outputs: outlier channels agree bit for bit; elsewhere ours
// differs by at most one step of the layer's quantiser (its scale, read from our payload) plus
// one fp16 spacing. Also: on these keys (D/32 loud channels per head, one global fp16 channel)
// the reference's own key cosine is low, and ours is the same.
TEST(Kvquant2Bit, GoldenDifferencesAreAtMostOneStep) {
  for (const std::string& tag : testing::GoldenTags()) {
    SCOPED_TRACE(tag);
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv in, testing::LoadGoldenInput(tag));
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv want, testing::LoadGoldenOutput(tag, "kvquant_2bit"));
    const KvGeometry& g = in.geom;
    auto codec = Make(CodecPath::kFast);
    ThreadPool pool(2);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, in.view(), &pool));
    OwnedKv got = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, got.mutable_view(), &pool));
    const uint64_t blob = BlobBytes(g);
    int64_t diffs[2] = {0, 0};
    for (int t = 0; t < 2; ++t) {
      const uint8_t* b = p.data() + kHeader + t * blob;
      const uint32_t outlier = LoadU32(b + 36);  // n_out = 1 for these head dims
      const uint8_t* scales = b + blob - 8 * g.layers;
      const std::vector<uint16_t>& x = t == 0 ? got.k : got.v;
      const std::vector<uint16_t>& y = t == 0 ? want.k : want.v;
      for (int64_t e = 0; e < g.elements(); ++e) {
        if (x[e] == y[e]) continue;
        ++diffs[t];
        ASSERT_NE(e % g.head_dim, outlier) << "outlier channel differs at " << e;
        const int64_t l = e / g.layer_elements();
        EXPECT_LE(std::fabs(HalfToFloat(x[e]) - HalfToFloat(y[e])),
                  LoadF32(scales + 4 * l) + Ulp16(HalfToFloat(y[e])))
            << "element " << e;
      }
    }
    const Fidelity ours = MeasureFidelity(in.view(), got.view());
    const Fidelity theirs = MeasureFidelity(in.view(), want.view());
    EXPECT_NEAR(ours.mean_key_cosine, theirs.mean_key_cosine, 1e-3);
    EXPECT_NEAR(ours.mean_value_cosine, theirs.mean_value_cosine, 1e-3);
    std::cout << "[ golden   ] kvquant_2bit " << tag << ": " << diffs[0] << " K and " << diffs[1]
              << " V elements differ of " << g.elements() << " each; mean key/value cosine "
              << theirs.mean_key_cosine << " / " << theirs.mean_value_cosine << " (reference), "
              << ours.mean_key_cosine << " / " << ours.mean_value_cosine << " (ours)\n";
  }
}

TEST(Kvquant2Bit, FastPathWritesReferenceBytes) {
  const KvGeometry shapes[] = {{2, 3, 7, 5}, {1, 2, 13, 6},  {3, 2, 130, 128}, {2, 4, 50, 96},
                               {1, 1, 1, 1}, {2, 1, 3, 250}, {1, 2, 5, 1},     {2, 2, 9, 17}};
  auto ref = Make(CodecPath::kReference);
  auto fast = Make(CodecPath::kFast);
  ThreadPool pool(3);
  for (const KvGeometry& g : shapes) {
    SCOPED_TRACE(g.ToString());
    OwnedKv kv = MakeSyntheticKv(g, 17);
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

// Each corruption of a blob's header, counts or channel lists is an InvalidArgument, in the K
// blob and in the V blob, on both decoders.
TEST(Kvquant2Bit, RejectsMalformedBlobs) {
  const KvGeometry g{2, 2, 9, 16};  // n_out = 1: outlier index at blob offset 36, normal at 40
  OwnedKv kv = MakeSyntheticKv(g, 5);
  const uint64_t blob = BlobBytes(g);
  struct Corruption {
    const char* what;
    std::function<void(uint8_t* b)> apply;
    const char* message;
  };
  const Corruption cases[] = {
      {"section 2 length", [](uint8_t* b) { StoreU32(b + 8, LoadU32(b + 8) + 4); }, "section 2"},
      {"section 4 length", [](uint8_t* b) { StoreU32(b + 16, LoadU32(b + 16) - 1); }, "section 4"},
      {"n_out", [](uint8_t* b) { StoreU32(b + 28, 2); }, "outlier and"},
      {"n_normal", [](uint8_t* b) { StoreU32(b + 32, 16); }, "outlier and"},
      {"outlier out of range", [](uint8_t* b) { StoreU32(b + 36, 16); }, "outlier channel 16"},
      {"outlier also normal", [](uint8_t* b) { StoreU32(b + 36, LoadU32(b + 40)); },
       "outlier channel"},
      {"normal out of range", [](uint8_t* b) { StoreU32(b + 40 + 4 * 14, 99); }, "ascending"},
      {"normal not ascending",
       [](uint8_t* b) {
         const uint32_t a = LoadU32(b + 40), c = LoadU32(b + 44);
         StoreU32(b + 40, c);
         StoreU32(b + 44, a);
       },
       "ascending"},
      {"normal repeated", [](uint8_t* b) { StoreU32(b + 44, LoadU32(b + 40)); }, "ascending"},
  };
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    for (const Corruption& c : cases) {
      for (int t = 0; t < 2; ++t) {
        SCOPED_TRACE(std::string(c.what) + (t == 0 ? " in K" : " in V"));
        std::vector<uint8_t> bad = p;
        c.apply(bad.data() + kHeader + t * blob);
        OwnedKv out = OwnedKv::Zeros(g);
        EXPECT_THAT(DecodeFromVector(*codec, bad, out.mutable_view(), nullptr),
                    StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
      }
    }
  }
}

}  // namespace
}  // namespace kvs
