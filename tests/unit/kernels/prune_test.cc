// topk_prune_50 and cascade_prune50_int4: token selection, bit-exact kept rows, keep_mask and the
// zero-fill flag, closed-form sizes (CODECS.md §1.5), fast == reference, golden mismatch bounds
// and malformed index sections.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "common/half/half.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/fidelity.h"
#include "kernels/format/payload.h"
#include "kernels/format/prune.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

using ::testing::HasSubstr;
using ::kvs::testing::StatusIs;

const char* const kCodecs[] = {"topk_prune_50", "cascade_prune50_int4"};

std::unique_ptr<Codec> Make(const std::string& name, CodecPath path = CodecPath::kFast,
                            PruneFill fill = PruneFill::kMask) {
  CodecOptions o;
  o.path = path;
  o.prune_fill = fill;
  auto c = CodecRegistry::Builtin().Create(name, o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(c).value() : nullptr;
}

// Byte offset of the index section in a payload.
uint64_t IndexOffset(const std::string& codec, const KvGeometry& g) {
  return kPayloadHeaderBytes + (codec == "topk_prune_50"
                                    ? 4 * format::PruneKeptElements(g)
                                    : format::CascadeSections(g).indices());
}

std::vector<uint32_t> Indices(const std::string& codec, const KvGeometry& g,
                              const std::vector<uint8_t>& payload) {
  std::vector<uint32_t> idx(format::PruneKeepCount(g));
  std::memcpy(idx.data(), payload.data() + IndexOffset(codec, g), 4 * idx.size());
  return idx;
}

// Mean over (l, h) of the key L2 norm, in double: the selection criterion, independently.
std::vector<double> Scores(const OwnedKv& kv) {
  const KvGeometry& g = kv.geom;
  std::vector<double> score(g.tokens, 0.0);
  for (int64_t lh = 0; lh < g.layers * g.heads; ++lh) {
    for (int64_t s = 0; s < g.tokens; ++s) {
      double sq = 0;
      for (int64_t d = 0; d < g.head_dim; ++d) {
        const double x = HalfToFloat(kv.k[(lh * g.tokens + s) * g.head_dim + d]);
        sq += x * x;
      }
      score[s] += std::sqrt(sq) / (g.layers * g.heads);
    }
  }
  return score;
}

struct Case {
  KvGeometry g;
  SynthKind kind;
  uint64_t seed;
  double min_key_cosine;  // cascade, over kept positions: per-token INT4 loses small channels
                          // next to the realistic keys' 4-12x outlier channels (CODECS.md §8.2)
};
const Case kCases[] = {
    {{4, 2, 32, 64}, SynthKind::kGaussian, 42, 0.99},    // the KVShuttle "small" fixture
    {{3, 2, 130, 128}, SynthKind::kRealistic, 7, 0.97},  // D = 128: one INT4 group per token
    {{2, 4, 50, 96}, SynthKind::kRealistic, 123, 0.97},  // D = 96: groups straddle tokens
    {{2, 1, 11, 8}, SynthKind::kRealistic, 5, 0.97},     // k = 5: one scored token
};

TEST(TopkPrune50, RoundTrip_KeptRowsBitExactEvictedZeroMaskMatchesIndices) {
  for (const std::string codec : kCodecs) {
    for (const Case& c : kCases) {
      SCOPED_TRACE(codec + " " + c.g.ToString());
      const KvGeometry& g = c.g;
      OwnedKv kv = MakeSyntheticKv(g, c.seed, c.kind);
      auto enc = Make(codec);
      EXPECT_TRUE(enc->info().prunes);
      KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*enc, kv.view(), nullptr));
      const std::vector<uint32_t> idx = Indices(codec, g, payload);
      ASSERT_EQ(static_cast<int64_t>(idx.size()), std::max<int64_t>(1, g.tokens / 2));
      ASSERT_TRUE(std::is_sorted(idx.begin(), idx.end()));
      ASSERT_EQ(std::adjacent_find(idx.begin(), idx.end()), idx.end());
      const std::set<uint32_t> kept(idx.begin(), idx.end());
      for (uint32_t p : {0u, 1u, static_cast<uint32_t>(g.tokens - 2),
                         static_cast<uint32_t>(g.tokens - 1)}) {
        EXPECT_TRUE(kept.count(p)) << "protected position " << p;
      }
      // Every kept (non-protected) token scores at least as high as every evicted one.
      const std::vector<double> score = Scores(kv);
      double min_kept = INFINITY, max_evicted = -INFINITY;
      for (int64_t s = 2; s < g.tokens - 2; ++s) {
        if (kept.count(s)) {
          min_kept = std::min(min_kept, score[s]);
        } else {
          max_evicted = std::max(max_evicted, score[s]);
        }
      }
      EXPECT_GE(min_kept, max_evicted * (1 - 1e-6));

      OwnedKv out = MakeSyntheticKv(g, 99);  // garbage that decode must overwrite
      std::vector<uint8_t> mask(g.tokens, 7);
      KVS_ASSERT_OK(DecodeFromVector(*enc, payload, out.mutable_view(), nullptr,
                                     absl::MakeSpan(mask)));
      for (int64_t s = 0; s < g.tokens; ++s) EXPECT_EQ(mask[s], kept.count(s)) << "s=" << s;
      int64_t kept_diff = 0;
      for (int64_t lh = 0; lh < g.layers * g.heads; ++lh) {
        for (int64_t s = 0; s < g.tokens; ++s) {
          for (int64_t d = 0; d < g.head_dim; ++d) {
            const size_t i = (lh * g.tokens + s) * g.head_dim + d;
            if (!kept.count(s)) {
              ASSERT_EQ(out.k[i], 0) << "s=" << s;
              ASSERT_EQ(out.v[i], 0) << "s=" << s;
            } else {
              kept_diff += (out.k[i] != kv.k[i]) + (out.v[i] != kv.v[i]);
            }
          }
        }
      }
      if (codec == "topk_prune_50") {
        EXPECT_EQ(kept_diff, 0) << "topk keeps rows bit-exactly";
      } else {
        // INT4 of the kept rows: key cosine over kept positions (evicted ones are zero in both).
        OwnedKv masked = kv;
        for (int64_t lh = 0; lh < g.layers * g.heads; ++lh) {
          for (int64_t s = 0; s < g.tokens; ++s) {
            if (kept.count(s)) continue;
            std::fill_n(masked.k.begin() + (lh * g.tokens + s) * g.head_dim, g.head_dim, 0);
            std::fill_n(masked.v.begin() + (lh * g.tokens + s) * g.head_dim, g.head_dim, 0);
          }
        }
        const Fidelity f = MeasureFidelity(masked.view(), out.view());
        EXPECT_GT(f.mean_key_cosine, c.min_key_cosine);
        EXPECT_GT(f.mean_value_cosine, 0.99);
      }
    }
  }
}

// k = max(1, ⌊S/2⌋); protected {0, 1, S-2, S-1} deduplicated; k <= 4 keeps the first k of them.
TEST(TopkPrune50, TinySequencesKeepProtectedPositionsInOrder) {
  const std::vector<std::vector<uint32_t>> want = {
      {0}, {0}, {0}, {0, 1}, {0, 1}, {0, 1, 4}, {0, 1, 5}, {0, 1, 6, 7}, {0, 1, 7, 8}};
  for (const std::string codec : kCodecs) {
    for (int64_t S = 1; S <= 9; ++S) {
      const KvGeometry g{2, 2, S, 16};
      OwnedKv kv = MakeSyntheticKv(g, 3);
      auto enc = Make(codec);
      KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*enc, kv.view(), nullptr));
      EXPECT_EQ(Indices(codec, g, payload), want[S - 1]) << codec << " S=" << S;
      OwnedKv out = OwnedKv::Zeros(g);
      KVS_EXPECT_OK(DecodeFromVector(*enc, payload, out.mutable_view(), nullptr));
    }
  }
}

// Equal scores: the lower position wins (documented tie rule; the reference's is arbitrary).
TEST(TopkPrune50, TiesGoToLowerPositions) {
  const KvGeometry g{1, 1, 20, 8};
  OwnedKv kv = OwnedKv::Zeros(g);
  std::fill(kv.k.begin(), kv.k.end(), FloatToHalf(1.0f));
  auto enc = Make("topk_prune_50");
  KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*enc, kv.view(), nullptr));
  EXPECT_EQ(Indices("topk_prune_50", g, payload),
            (std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 18, 19}));
}

TEST(TopkPrune50, ZeroFillFlagKeepsMaskAllOnesAndDecoderFollowsThePayload) {
  const KvGeometry g{2, 2, 40, 64};
  OwnedKv kv = MakeSyntheticKv(g, 11);
  for (const std::string codec : kCodecs) {
    SCOPED_TRACE(codec);
    auto masking = Make(codec, CodecPath::kFast, PruneFill::kMask);
    auto zeroing = Make(codec, CodecPath::kFast, PruneFill::kZero);
    KVS_ASSERT_OK_AND_ASSIGN(auto p_mask, EncodeToVector(*masking, kv.view(), nullptr));
    KVS_ASSERT_OK_AND_ASSIGN(auto p_zero, EncodeToVector(*zeroing, kv.view(), nullptr));
    EXPECT_EQ(p_mask[7], 0);
    EXPECT_EQ(p_zero[7], kFlagPruneZeroFill);
    // Same body either way.
    EXPECT_TRUE(std::equal(p_mask.begin() + 32, p_mask.end(), p_zero.begin() + 32));
    for (const Codec* decoder : {masking.get(), zeroing.get()}) {
      OwnedKv a = OwnedKv::Zeros(g), b = OwnedKv::Zeros(g);
      std::vector<uint8_t> mask_a(g.tokens), mask_b(g.tokens);
      KVS_ASSERT_OK(DecodeFromVector(*decoder, p_mask, a.mutable_view(), nullptr,
                                     absl::MakeSpan(mask_a)));
      KVS_ASSERT_OK(DecodeFromVector(*decoder, p_zero, b.mutable_view(), nullptr,
                                     absl::MakeSpan(mask_b)));
      EXPECT_EQ(a.k, b.k);  // evicted positions are zeros in both modes
      EXPECT_EQ(a.v, b.v);
      EXPECT_EQ(std::count(mask_a.begin(), mask_a.end(), 1), g.tokens / 2);
      EXPECT_EQ(std::count(mask_b.begin(), mask_b.end(), 1), g.tokens);
    }
  }
}

// Ratios over the reference's data bytes (our 32-byte header excluded), CODECS.md §1.5.
TEST(TopkPrune50, ClosedFormSizes) {
  struct Size {
    const char* codec;
    KvGeometry g;
    double ratio;
  };
  const Size kSizes[] = {
      {"topk_prune_50", {32, 8, 1024, 128}, 4.0 * 1024 * 128 / (4.0 * 512 * 128 + 4 * 512 / 256.0)},
      {"topk_prune_50", {4, 2, 32, 64}, 65536.0 / (4 * 4 * 2 * 16 * 64 + 4 * 16)},
      {"cascade_prune50_int4", {32, 8, 220, 128}, 7.110},  // Llama-3.1-8B, S = 220
      {"cascade_prune50_int4", {32, 8, 1024, 128}, 4.0 * 1024 * 128 / (144.0 * 512 + 4 * 512 / 256.0)},
      {"cascade_prune50_int4", {4, 2, 37, 64}, 75776.0 / 10440},  // golden index: 10440 bytes
  };
  for (const Size& s : kSizes) {
    auto codec = Make(s.codec);
    KVS_ASSERT_OK_AND_ASSIGN(size_t bytes, codec->MaxEncodedBytes(s.g));
    const double ratio = static_cast<double>(s.g.raw_bytes()) / (bytes - kPayloadHeaderBytes);
    EXPECT_NEAR(ratio, s.ratio, 5e-4) << s.codec << " " << s.g.ToString();
  }
  // Exact byte count at Llama-3.1-8B S = 220: 2·int4(32·8·110·128) + 4·110.
  auto cascade = Make("cascade_prune50_int4");
  EXPECT_EQ(*cascade->MaxEncodedBytes({32, 8, 220, 128}), 32u + 2 * (1802240 + 225280) + 440);
}

// The fast encoder writes the reference's payload: topk bit for bit; cascade with the same
// indices, scales and zeros, and INT4 codes that differ by at most one step in at most 0.1 % of
// the packed bytes (the INT4 primitive's fast path may round a code on the other side of a
// boundary).
TEST(TopkPrune50, FastPathWritesTheReferencePayload) {
  for (const std::string codec : kCodecs) {
    for (const Case& c : kCases) {
      SCOPED_TRACE(codec + " " + c.g.ToString());
      OwnedKv kv = MakeSyntheticKv(c.g, c.seed, c.kind);
      ThreadPool pool(2);
      KVS_ASSERT_OK_AND_ASSIGN(auto ref, EncodeToVector(*Make(codec, CodecPath::kReference),
                                                        kv.view(), nullptr));
      KVS_ASSERT_OK_AND_ASSIGN(auto fast, EncodeToVector(*Make(codec), kv.view(), &pool));
      ASSERT_EQ(ref.size(), fast.size());
      const uint64_t packed_end =
          codec == "topk_prune_50" ? 0 : 32 + 2 * format::CascadeSections(c.g).packed();
      int64_t code_diffs = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        if (ref[i] == fast[i]) continue;
        ASSERT_TRUE(i >= 32 && i < packed_end) << "byte " << i << " outside the packed codes";
        EXPECT_LE(std::abs((ref[i] >> 4) - (fast[i] >> 4)), 1) << "byte " << i;
        EXPECT_LE(std::abs((ref[i] & 15) - (fast[i] & 15)), 1) << "byte " << i;
        ++code_diffs;
      }
      EXPECT_LE(code_diffs, static_cast<int64_t>(1e-3 * (packed_end - 32)));
      OwnedKv a = OwnedKv::Zeros(c.g), b = OwnedKv::Zeros(c.g);
      KVS_ASSERT_OK(DecodeFromVector(*Make(codec, CodecPath::kReference), ref, a.mutable_view(),
                                     nullptr));
      KVS_ASSERT_OK(DecodeFromVector(*Make(codec), ref, b.mutable_view(), &pool));
      EXPECT_EQ(a.k, b.k);
      EXPECT_EQ(a.v, b.v);
    }
  }
}

// Golden outputs of the reference (zero-fill mode). topk must match bit for bit. cascade may
// differ only where rounding differs, by at most one INT4 step of the element's group
// ((max - min) / 15 of the kept values, from the input) plus one fp16 ulp of the output.
TEST(TopkPrune50, GoldenMismatchesWithinOneStep) {
  for (const std::string codec : kCodecs) {
    for (const std::string& tag : testing::GoldenTags()) {
      SCOPED_TRACE(codec + " " + tag);
      KVS_ASSERT_OK_AND_ASSIGN(OwnedKv in, testing::LoadGoldenInput(tag));
      KVS_ASSERT_OK_AND_ASSIGN(OwnedKv want, testing::LoadGoldenOutput(tag, codec));
      const KvGeometry& g = in.geom;
      auto enc = Make(codec, CodecPath::kFast, PruneFill::kZero);
      KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*enc, in.view(), nullptr));
      OwnedKv got = OwnedKv::Zeros(g);
      KVS_ASSERT_OK(DecodeFromVector(*enc, payload, got.mutable_view(), nullptr));
      const std::vector<uint32_t> idx = Indices(codec, g, payload);
      const int64_t k = idx.size(), D = g.head_dim;
      int64_t mismatches = 0;
      for (int t = 0; t < 2; ++t) {
        const std::vector<uint16_t>& x = t == 0 ? in.k : in.v;
        const std::vector<uint16_t>& a = t == 0 ? got.k : got.v;
        const std::vector<uint16_t>& b = t == 0 ? want.k : want.v;
        // Kept values in [L,H,k,D] order, and each one's output position.
        std::vector<float> kept;
        std::vector<size_t> pos;
        for (int64_t lh = 0; lh < g.layers * g.heads; ++lh) {
          for (int64_t j = 0; j < k; ++j) {
            for (int64_t d = 0; d < D; ++d) {
              pos.push_back((lh * g.tokens + idx[j]) * D + d);
              kept.push_back(HalfToFloat(x[pos.back()]));
            }
          }
        }
        std::vector<bool> is_kept(a.size(), false);
        for (size_t p : pos) is_kept[p] = true;
        for (size_t i = 0; i < a.size(); ++i) {
          if (!is_kept[i]) {
            ASSERT_EQ(b[i], 0) << "reference keeps a position we evicted: " << i;
          }
        }
        for (size_t e = 0; e < kept.size(); ++e) {
          const size_t p = pos[e];
          if (a[p] == b[p]) continue;
          ++mismatches;
          ASSERT_NE(codec, "topk_prune_50");
          const size_t g0 = e / 128 * 128, g1 = std::min(kept.size(), g0 + 128);
          float mn = kept[g0], mx = kept[g0];
          for (size_t i = g0; i < g1; ++i) mn = std::min(mn, kept[i]), mx = std::max(mx, kept[i]);
          if (g1 - g0 < 128) mn = std::min(mn, 0.0f), mx = std::max(mx, 0.0f);  // zero padding
          const float ya = HalfToFloat(a[p]), yb = HalfToFloat(b[p]);
          const float ulp =
              std::ldexp(1.0f, std::ilogb(std::max(std::fabs(yb), std::ldexp(1.0f, -14))) - 10);
          EXPECT_LE(std::fabs(ya - yb), (mx - mn) / 15 + ulp) << "element " << p;
        }
      }
      std::cout << "[ golden   ] " << codec << " " << tag << ": " << mismatches
                << " mismatching elements of " << 2 * in.k.size() << "\n";
    }
  }
}

TEST(TopkPrune50, RejectsMalformedIndexSections) {
  const KvGeometry g{2, 2, 37, 64};
  OwnedKv kv = MakeSyntheticKv(g, 9);
  for (const std::string codec : kCodecs) {
    SCOPED_TRACE(codec);
    auto c = Make(codec);
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*c, kv.view(), nullptr));
    const uint64_t off = IndexOffset(codec, g);
    const uint32_t k = format::PruneKeepCount(g);
    auto set = [&](std::vector<uint8_t>& b, uint32_t j, uint32_t v) {
      std::memcpy(b.data() + off + 4 * j, &v, 4);
    };
    std::vector<std::vector<uint8_t>> bad(5, p);
    set(bad[0], k - 1, 37);           // == S
    set(bad[1], k - 1, 0xFFFFFFFFu);  // far out of range
    set(bad[2], 1, 0);                // duplicate of position 0
    set(bad[3], 0, 5);                // not ascending (5 > idx[1] = 1)
    bad[4][7] = 0x80;                 // unknown header flag
    OwnedKv out = OwnedKv::Zeros(g);
    for (size_t i = 0; i < bad.size(); ++i) {
      EXPECT_THAT(DecodeFromVector(*c, bad[i], out.mutable_view(), nullptr),
                  StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(codec)))
          << "case " << i;
    }
    KVS_EXPECT_OK(DecodeFromVector(*c, p, out.mutable_view(), nullptr));
  }
}

}  // namespace
}  // namespace kvs
