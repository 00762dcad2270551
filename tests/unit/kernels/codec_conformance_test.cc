// Properties every registered codec must have, on both its reference and fast paths:
// exact sizes, self-describing headers, fast == reference, streaming chunks, and bad payloads
// rejected without crashing (this file also runs under ASan+UBSan in CI).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "common/half/half.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/fidelity.h"
#include "tests/testing/status_matchers.h"

namespace kvs {
namespace {

using ::testing::HasSubstr;
using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;

const std::vector<std::string>& AllCodecs() {
  static const auto* names = new std::vector<std::string>(CodecRegistry::Builtin().Names());
  return *names;
}

struct Shape {
  KvGeometry g;
  SynthKind kind;
  uint64_t seed;
};
// The KVShuttle "small" fixture, plus realistic shapes with S not a multiple of 10 or 128 and
// D = 96 (int4 groups straddle tokens).
const Shape kShapes[] = {
    {{4, 2, 32, 64}, SynthKind::kGaussian, 42},
    {{3, 2, 130, 128}, SynthKind::kRealistic, 7},
    {{2, 4, 50, 96}, SynthKind::kRealistic, 123},
};

std::unique_ptr<Codec> MakeCodec(const std::string& name, CodecPath path) {
  CodecOptions o;
  o.path = path;
  auto c = CodecRegistry::Builtin().Create(name, o);
  EXPECT_THAT(c, IsOk());
  return c.ok() ? std::move(c).value() : nullptr;
}

class CodecConformance : public ::testing::TestWithParam<std::string> {};

TEST(CodecRegistry, HasAll14SortedAndRejectsUnknownNames) {
  const std::vector<std::string> want = {
      "cachegen", "cascade_prune50_int4", "fp8_e4m3", "identity", "kivi_2bit",
      "kvquant_2bit", "lossless_lz4", "lossless_zstd", "mixed_k8v4", "palu_int4",
      "palu_lr", "topk_prune_50", "uniform_int4", "uniform_int8"};
  EXPECT_EQ(AllCodecs(), want);
  auto c = CodecRegistry::Builtin().Create("no_such_codec");
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kNotFound, HasSubstr("uniform_int8")));
  std::set<int> ids;
  for (const auto& n : want) {
    auto codec = CodecRegistry::Builtin().Create(n);
    ASSERT_THAT(codec, IsOk()) << n;
    EXPECT_EQ((*codec)->name(), n);
    ids.insert(static_cast<int>((*codec)->info().id));
    auto by_id = CodecRegistry::Builtin().Create((*codec)->info().id);
    ASSERT_THAT(by_id, IsOk());
    EXPECT_EQ((*by_id)->name(), n);
  }
  EXPECT_EQ(ids.size(), want.size());
}

TEST_P(CodecConformance, RoundTripSizesAndHeader) {
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    auto codec = MakeCodec(GetParam(), path);
    ASSERT_NE(codec, nullptr);
    for (const Shape& s : kShapes) {
      SCOPED_TRACE(s.g.ToString());
      OwnedKv kv = MakeSyntheticKv(s.g, s.seed, s.kind);
      ThreadPool pool(2);
      KVS_ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> payload, EncodeToVector(*codec, kv.view(), &pool));
      KVS_ASSERT_OK_AND_ASSIGN(size_t max_bytes, codec->MaxEncodedBytes(s.g));
      if (codec->info().exact_size) {
        EXPECT_EQ(payload.size(), max_bytes);
      } else {
        EXPECT_LE(payload.size(), max_bytes);
      }
      KVS_ASSERT_OK_AND_ASSIGN(PayloadSummary sum, InspectPayload(payload));
      EXPECT_EQ(sum.geom, s.g);
      EXPECT_EQ(sum.codec, codec->info().id);

      OwnedKv out = OwnedKv::Zeros(s.g);
      std::vector<uint8_t> keep(s.g.tokens, 7);
      KVS_ASSERT_OK(DecodeFromVector(*codec, payload, out.mutable_view(), &pool, absl::MakeSpan(keep)));
      for (uint8_t m : keep) ASSERT_TRUE(m == 0 || m == 1);
      if (!codec->info().prunes) {
        EXPECT_TRUE(std::all_of(keep.begin(), keep.end(), [](uint8_t m) { return m == 1; }));
      }
      if (!codec->info().lossy) {
        EXPECT_EQ(out.k, kv.k);
        EXPECT_EQ(out.v, kv.v);
      } else {
        const Fidelity f = MeasureFidelity(kv.view(), out.view());
        // A weak floor every lossy codec clears, even kvquant_2bit, whose single global outlier
        // channel leaves the other heads' loud channels to a per-layer 2-bit range (key cosine
        // 0.2-0.3 on this synthetic KV); per-codec tests hold the tight bounds.
        EXPECT_GT(f.mean_key_cosine, 0.15);
        EXPECT_GT(f.mean_value_cosine, 0.3);
      }
    }
  }
}

// The fast path writes the reference's payload format: each decoder reads the other's payload,
// and decoded tensors agree (bit-exact, or in a tiny fraction of elements off by one step).
TEST_P(CodecConformance, FastPathMatchesReference) {
  auto ref = MakeCodec(GetParam(), CodecPath::kReference);
  auto fast = MakeCodec(GetParam(), CodecPath::kFast);
  ASSERT_NE(ref, nullptr);
  ASSERT_NE(fast, nullptr);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(s.g.ToString());
    OwnedKv kv = MakeSyntheticKv(s.g, s.seed, s.kind);
    ThreadPool pool(2);
    KVS_ASSERT_OK_AND_ASSIGN(auto p_ref, EncodeToVector(*ref, kv.view(), nullptr));
    KVS_ASSERT_OK_AND_ASSIGN(auto p_fast, EncodeToVector(*fast, kv.view(), &pool));
    ASSERT_EQ(p_ref.size(), p_fast.size());
    OwnedKv a = OwnedKv::Zeros(s.g), b = OwnedKv::Zeros(s.g), c = OwnedKv::Zeros(s.g);
    KVS_ASSERT_OK(DecodeFromVector(*ref, p_ref, a.mutable_view(), nullptr));
    KVS_ASSERT_OK(DecodeFromVector(*fast, p_fast, b.mutable_view(), &pool));
    KVS_ASSERT_OK(DecodeFromVector(*ref, p_fast, c.mutable_view(), nullptr));
    // Decoders are bit-identical on the same payload.
    EXPECT_EQ(b.k, c.k);
    EXPECT_EQ(b.v, c.v);
    // Encoders: identical payloads where the math allows; otherwise < 0.5 % of elements differ.
    int64_t diff = 0;
    for (size_t i = 0; i < a.k.size(); ++i) diff += (a.k[i] != b.k[i]) + (a.v[i] != b.v[i]);
    EXPECT_LE(diff, static_cast<int64_t>(0.005 * 2 * a.k.size())) << "elements differing";
  }
}

TEST_P(CodecConformance, StreamingLayerChunksDecodeIntoPlace) {
  auto codec = MakeCodec(GetParam(), CodecPath::kFast);
  ASSERT_NE(codec, nullptr);
  const KvGeometry g{4, 2, 32, 64};
  OwnedKv kv = MakeSyntheticKv(g, 5, SynthKind::kRealistic);
  OwnedKv whole = OwnedKv::Zeros(g), streamed = OwnedKv::Zeros(g);
  KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
  KVS_ASSERT_OK(DecodeFromVector(*codec, p, whole.mutable_view(), nullptr));
  for (int64_t l = 0; l < g.layers; ++l) {
    KVS_ASSERT_OK_AND_ASSIGN(auto chunk, EncodeToVector(*codec, kv.view().Layers(l, l + 1), nullptr));
    KVS_ASSERT_OK_AND_ASSIGN(PayloadSummary sum, InspectPayload(chunk));
    EXPECT_EQ(sum.geom, g.WithLayers(1));
    KVS_ASSERT_OK(DecodeFromVector(*codec, chunk, streamed.mutable_view().Layers(l, l + 1), nullptr));
  }
  // Codecs whose statistics never span layers give identical results in both modes
  // (4096-element layers keep int4 groups inside a layer).
  static const std::set<std::string> kLayerLocal = {
      "identity", "lossless_zstd", "lossless_lz4", "uniform_int8", "fp8_e4m3", "uniform_int4",
      "mixed_k8v4", "kivi_2bit", "cachegen", "palu_lr", "palu_int4"};
  if (kLayerLocal.count(GetParam())) {
    EXPECT_EQ(whole.k, streamed.k);
    EXPECT_EQ(whole.v, streamed.v);
  } else {
    const Fidelity f = MeasureFidelity(kv.view(), streamed.view());
    EXPECT_GT(f.mean_key_cosine, 0.15);
  }
}

TEST_P(CodecConformance, RejectsMalformedPayloadsWithoutCrashing) {
  auto codec = MakeCodec(GetParam(), CodecPath::kFast);
  ASSERT_NE(codec, nullptr);
  const KvGeometry g{2, 2, 37, 64};
  OwnedKv kv = MakeSyntheticKv(g, 9, SynthKind::kRealistic);
  KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
  OwnedKv out = OwnedKv::Zeros(g);

  // Truncated anywhere: always an error.
  for (size_t len : std::vector<size_t>{0, 1, 31, 32, 33, p.size() / 2,
                     p.size() - 1}) {
    std::vector<uint8_t> t(p.begin(), p.begin() + len);
    EXPECT_FALSE(DecodeFromVector(*codec, t, out.mutable_view(), nullptr).ok()) << "len " << len;
  }
  // Oversized: an extra byte is an error.
  std::vector<uint8_t> longer = p;
  longer.push_back(0);
  EXPECT_FALSE(DecodeFromVector(*codec, longer, out.mutable_view(), nullptr).ok());
  // Wrong expected geometry: an error, before the body is read.
  OwnedKv other = OwnedKv::Zeros({2, 2, 36, 64});
  EXPECT_THAT(DecodeFromVector(*codec, p, other.mutable_view(), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("geometry")));
  // Corrupted header fields: each an error.
  for (size_t off : {0, 4, 5, 6, 8, 12, 16, 20, 24, 28}) {
    std::vector<uint8_t> bad = p;
    bad[off] ^= 0x5A;
    EXPECT_FALSE(DecodeFromVector(*codec, bad, out.mutable_view(), nullptr).ok()) << "off " << off;
  }
  // Random body bytes: decode may succeed (garbage in, bounded garbage out) or fail, but must
  // stay in bounds (ASan) and never crash.
  uint64_t x = 88172645463325252ull;
  for (int trial = 0; trial < 64; ++trial) {
    std::vector<uint8_t> bad = p;
    for (int k = 0; k < 8; ++k) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      bad[32 + x % (bad.size() - 32)] = static_cast<uint8_t>(x >> 24);
    }
    (void)DecodeFromVector(*codec, bad, out.mutable_view(), nullptr);
  }
  // All-0xFF body (every section-length field maximal).
  std::vector<uint8_t> ff = p;
  std::fill(ff.begin() + 32, ff.end(), 0xFF);
  (void)DecodeFromVector(*codec, ff, out.mutable_view(), nullptr);
}

TEST_P(CodecConformance, RejectsBadBuffersAndGeometry) {
  auto codec = MakeCodec(GetParam(), CodecPath::kFast);
  ASSERT_NE(codec, nullptr);
  EXPECT_FALSE(codec->MaxEncodedBytes({0, 2, 32, 64}).ok());
  EXPECT_FALSE(codec->MaxEncodedBytes({1, 1, -1, 64}).ok());
  const KvGeometry g{1, 2, 16, 64};
  OwnedKv kv = MakeSyntheticKv(g, 1);
  KVS_ASSERT_OK_AND_ASSIGN(size_t cap, codec->MaxEncodedBytes(g));
  std::vector<uint8_t> small(cap - 1), ws(codec->WorkspaceBytes(g, nullptr) + 1);
  EXPECT_THAT(codec->Encode(kv.view(), absl::MakeSpan(small), absl::MakeSpan(ws), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("buffer")));
}

TEST_P(CodecConformance, DegenerateInputs) {
  auto codec = MakeCodec(GetParam(), CodecPath::kFast);
  ASSERT_NE(codec, nullptr);
  // All zeros (range 0 everywhere) and a single token: finite output, zeros stay zeros.
  for (const KvGeometry& g : {KvGeometry{2, 1, 1, 64}, KvGeometry{1, 2, 5, 8}}) {
    OwnedKv kv = OwnedKv::Zeros(g);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
    OwnedKv out = MakeSyntheticKv(g, 3);
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, out.mutable_view(), nullptr));
    for (size_t i = 0; i < out.k.size(); ++i) {
      ASSERT_EQ(HalfToFloat(out.k[i]), 0.0f) << GetParam() << " " << g.ToString() << " i=" << i;
      ASSERT_EQ(HalfToFloat(out.v[i]), 0.0f);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, CodecConformance, ::testing::ValuesIn(AllCodecs()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace kvs
