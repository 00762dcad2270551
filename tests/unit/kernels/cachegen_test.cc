// cachegen: closed-form sizes (CODECS.md §1.5), the record layout on hand-computed cases
// (one-token chunks, nibble padding), the §9 quality floor, the golden outputs within one
// quantisation step, the fast path writing the reference's bytes, and bad record headers
// rejected.
#include "kernels/format/cachegen.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>

#include "common/half/half.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
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

std::unique_ptr<Codec> Make(CodecPath path) { return testing::MakeCodec("cachegen", path); }

// Record bytes per CODECS.md §1.5, written out independently of the format header.
uint64_t RecordBytes(const KvGeometry& g) {
  const uint64_t C = (g.tokens + 9) / 10, D = g.head_dim;
  return 12 + C * D + ((g.tokens - C) * D + 1) / 2 + 16 * C;
}

TEST(Cachegen, ClosedFormSizes) {
  struct Case {
    KvGeometry g;
    double ratio;  // raw bytes / body bytes as in CODECS.md §1.5; 0 = not checked
  };
  const Case cases[] = {
      {{32, 8, 1024, 128}, 3.553},  // Llama-3.1-8B, CODECS.md §1.5
      {{32, 32, 1024, 96}, 3.53},   // Phi-3.5
      {{4, 2, 32, 64}, 3.34},       // the KVShuttle "small" fixture (§9: > 1.5, about 3.34)
      {{2, 3, 7, 5}, 0},            // one short chunk, odd number of delta codes
  };
  auto codec = Make(CodecPath::kFast);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.g.ToString());
    KVS_ASSERT_OK_AND_ASSIGN(size_t bytes, codec->MaxEncodedBytes(c.g));
    EXPECT_EQ(bytes, kHeader + 2 * c.g.layers * c.g.heads * RecordBytes(c.g));
    if (c.ratio > 0) {
      EXPECT_NEAR(static_cast<double>(c.g.raw_bytes()) / (bytes - kHeader), c.ratio, 0.006);
    }
  }
  // The golden index's data_bytes.
  EXPECT_EQ(2 * 4 * 2 * RecordBytes({4, 2, 37, 64}), 22208u);
  EXPECT_EQ(2 * 3 * 2 * RecordBytes({3, 2, 130, 128}), 112464u);
  EXPECT_EQ(2 * 2 * 4 * RecordBytes({2, 4, 50, 96}), 43712u);
}

// K [1, 1, 3, 2]: one chunk of three tokens. Anchor (0, 255): scale 1, zero 0, codes 0 and 255.
// Deltas (10, 0), (5, -5): min -5, max 10, scale 1, codes 15, 5, 10, 0 -> bytes F5 A0.
TEST(Cachegen, RecordLayoutByHand) {
  const KvGeometry g{1, 1, 3, 2};
  const float k[6] = {0, 255, 10, 255, 5, 250};
  OwnedKv kv = OwnedKv::Zeros(g);
  for (int i = 0; i < 6; ++i) kv.k[i] = FloatToHalf(k[i]);  // V stays zero
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    ASSERT_EQ(p.size(), kHeader + 2 * RecordBytes(g));
    const uint8_t* r = p.data() + kHeader;
    EXPECT_EQ(LoadU32(r), 2u);      // anchor bytes
    EXPECT_EQ(LoadU32(r + 4), 2u);  // packed delta bytes
    EXPECT_EQ(LoadU32(r + 8), 4u);  // param floats
    EXPECT_EQ(r[12], 0);
    EXPECT_EQ(r[13], 255);
    EXPECT_EQ(r[14], 0xF5);
    EXPECT_EQ(r[15], 0xA0);
    const float params[4] = {1, 0, 1, -5};
    for (int i = 0; i < 4; ++i) EXPECT_EQ(LoadF32(r + 16 + 4 * i), params[i]) << i;
    // V is all zeros: zero ranges count as 1, so scale 1/255 and 1/15, zeros 0, codes 0.
    const uint8_t* rv = r + RecordBytes(g);
    const float vparams[4] = {1.0f / 255.0f, 0, 1.0f / 15.0f, 0};
    for (int i = 0; i < 4; ++i) EXPECT_EQ(LoadF32(rv + 16 + 4 * i), vparams[i]) << i;
    OwnedKv out = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, out.mutable_view(), nullptr));
    EXPECT_EQ(out.k, kv.k);  // every value is on its grid
    EXPECT_EQ(out.v, kv.v);
  }
}

// S = 11, D = 3: the second chunk has one token (delta scale 1, zero 0 and no delta codes), and
// the 27 delta codes leave a zero low nibble at the end of the record's delta stream.
TEST(Cachegen, OneTokenChunkAndPadding) {
  const KvGeometry g{1, 1, 11, 3};
  OwnedKv kv = MakeSyntheticKv(g, 8);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    const uint8_t* r = p.data() + kHeader;
    EXPECT_EQ(LoadU32(r + 4), 14u);
    const uint8_t* deltas = r + 12 + 6;
    EXPECT_EQ(deltas[13] & 0x0F, 0);
    const uint8_t* params = deltas + 14;
    EXPECT_EQ(LoadF32(params + 16 + 8), 1.0f);
    EXPECT_EQ(LoadF32(params + 16 + 12), 0.0f);
  }
}

// CODECS.md §9: key cosine > 0.8 on the "small" fixture (N(0,1) [4,2,32,64], seed 42).
TEST(Cachegen, QualityFloorOfTheReferenceTests) {
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

// Against the KVShuttle reference's outputs: where ours differs, by at most one anchor step on
// an anchor token and one anchor step plus one delta step elsewhere (the anchor's error reaches
// the whole chunk), plus one fp16 spacing; the steps are read from our payload.
TEST(Cachegen, GoldenDifferencesAreAtMostOneStep) {
  for (const std::string& tag : testing::GoldenTags()) {
    SCOPED_TRACE(tag);
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv in, testing::LoadGoldenInput(tag));
    KVS_ASSERT_OK_AND_ASSIGN(OwnedKv want, testing::LoadGoldenOutput(tag, "cachegen"));
    const KvGeometry& g = in.geom;
    auto codec = Make(CodecPath::kFast);
    ThreadPool pool(2);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, in.view(), &pool));
    OwnedKv got = OwnedKv::Zeros(g);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, got.mutable_view(), &pool));
    const uint64_t record = RecordBytes(g), C = (g.tokens + 9) / 10;
    const int64_t slices = g.layers * g.heads;
    int64_t diffs[2] = {0, 0};
    for (int t = 0; t < 2; ++t) {
      const std::vector<uint16_t>& x = t == 0 ? got.k : got.v;
      const std::vector<uint16_t>& y = t == 0 ? want.k : want.v;
      for (int64_t e = 0; e < g.elements(); ++e) {
        if (x[e] == y[e]) continue;
        ++diffs[t];
        const int64_t slice = e / g.slice_elements(), s = e / g.head_dim % g.tokens, c = s / 10;
        const uint8_t* params =
            p.data() + kHeader + (t * slices + slice + 1) * record - 16 * C + 16 * c;
        const double step = LoadF32(params) + (s % 10 != 0 ? LoadF32(params + 8) : 0.0);
        EXPECT_LE(std::fabs(HalfToFloat(x[e]) - HalfToFloat(y[e])), step + Ulp16(HalfToFloat(y[e])))
            << (t == 0 ? "K" : "V") << " element " << e;
      }
    }
    std::cout << "[ golden   ] cachegen " << tag << ": " << diffs[0] << " K and " << diffs[1]
              << " V elements differ of " << g.elements() << " each\n";
  }
}

TEST(Cachegen, FastPathWritesReferenceBytes) {
  const KvGeometry shapes[] = {{2, 3, 7, 5}, {1, 2, 13, 6}, {3, 2, 130, 128}, {2, 4, 50, 96},
                               {1, 1, 1, 1}, {1, 1, 11, 3}, {2, 1, 21, 9},    {1, 3, 40, 200}};
  auto ref = Make(CodecPath::kReference);
  auto fast = Make(CodecPath::kFast);
  ThreadPool pool(3);
  for (const KvGeometry& g : shapes) {
    SCOPED_TRACE(g.ToString());
    OwnedKv kv = MakeSyntheticKv(g, 23);
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

// Any record header field that disagrees with the geometry is an InvalidArgument, in the first
// (K) and the last (V) record, on both decoders.
TEST(Cachegen, RejectsBadRecordHeaders) {
  const KvGeometry g{2, 2, 23, 16};
  OwnedKv kv = MakeSyntheticKv(g, 6);
  const uint64_t record = RecordBytes(g);
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = Make(path);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    for (uint64_t rec : {uint64_t{0}, uint64_t{2 * 2 * 2 - 1}}) {
      for (int field = 0; field < 3; ++field) {
        for (uint32_t delta : {1u, 0x80000000u}) {
          SCOPED_TRACE(::testing::Message() << "record " << rec << " field " << field);
          std::vector<uint8_t> bad = p;
          uint8_t* f = bad.data() + kHeader + rec * record + 4 * field;
          StoreU32(f, LoadU32(f) + delta);
          OwnedKv out = OwnedKv::Zeros(g);
          EXPECT_THAT(DecodeFromVector(*codec, bad, out.mutable_view(), nullptr),
                      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header")));
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvs
