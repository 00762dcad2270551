// kvshuttle's codecs against the KVShuttle reference implementation's own outputs
// (tests/data/golden, produced by its Python/NumPy code on fixed inputs; see README there).
//
// For every (input, codec) of the golden index, on both the reference and the fast path:
// - decode(encode(x)) equals the reference output bit for bit in all but at most 0.1 % of the
//   elements (the README's "rounding differences of at most one quantisation step in a small
//   fraction of elements"; per-codec tests bound the size of those differences); palu codecs,
//   whose SVD agrees only to fp16/SVD precision, must instead be within 0.2 % relative
//   Frobenius error of the reference output;
// - the payload body has exactly the reference's data bytes plus what the reference kept in its
//   JSON metadata (per-layer scales of int8, fp8 and mixed_k8v4's keys).
// fp8_e4m3 runs in `compat` mode and the pruning codecs in zero-fill mode, as the reference.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "common/half/half.h"
#include "kernels/codec.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

using testing::GoldenEntry;

int64_t ExtraBytesOverReference(const std::string& codec, const KvGeometry& g) {
  if (codec == "uniform_int8" || codec == "fp8_e4m3") return 8 * g.layers;  // K and V scales
  if (codec == "mixed_k8v4") return 4 * g.layers;                          // K scales
  return 0;
}

double RelativeFrobenius(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = HalfToFloat(a[i]), y = HalfToFloat(b[i]);
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace
}  // namespace kvs

namespace kvs::testing {
void PrintTo(const GoldenEntry& e, std::ostream* os) { *os << e.input << "/" << e.codec; }
}  // namespace kvs::testing

namespace kvs {
namespace {

class Golden : public ::testing::TestWithParam<GoldenEntry> {};

TEST_P(Golden, MatchesReferenceOutputAndSize) {
  const GoldenEntry& e = GetParam();
  KVS_ASSERT_OK_AND_ASSIGN(OwnedKv in, testing::LoadGoldenInput(e.input));
  KVS_ASSERT_OK_AND_ASSIGN(OwnedKv want, testing::LoadGoldenOutput(e.input, e.codec));
  for (CodecPath path : {CodecPath::kReference, CodecPath::kFast}) {
    SCOPED_TRACE(path == CodecPath::kFast ? "fast" : "reference");
    CodecOptions o;
    o.path = path;
    o.fp8_compat = true;
    o.prune_fill = PruneFill::kZero;
    KVS_ASSERT_OK_AND_ASSIGN(auto codec, CodecRegistry::Builtin().Create(e.codec, o));
    ThreadPool pool(2);
    KVS_ASSERT_OK_AND_ASSIGN(auto payload, EncodeToVector(*codec, in.view(), &pool));
    EXPECT_EQ(static_cast<int64_t>(payload.size()) - 32,
              e.data_bytes + ExtraBytesOverReference(e.codec, in.geom));
    OwnedKv got = OwnedKv::Zeros(in.geom);
    KVS_ASSERT_OK(DecodeFromVector(*codec, payload, got.mutable_view(), &pool));
    if (e.codec == "palu_lr" || e.codec == "palu_int4") {
      EXPECT_LT(RelativeFrobenius(got.k, want.k), 2e-3);
      EXPECT_LT(RelativeFrobenius(got.v, want.v), 2e-3);
      continue;
    }
    int64_t diff_k = 0, diff_v = 0;
    for (size_t i = 0; i < got.k.size(); ++i) {
      diff_k += got.k[i] != want.k[i];
      diff_v += got.v[i] != want.v[i];
    }
    const double n = static_cast<double>(got.k.size());
    EXPECT_LE(diff_k / n, 1e-3) << diff_k << " key elements differ";
    EXPECT_LE(diff_v / n, 1e-3) << diff_v << " value elements differ";
  }
}

std::vector<GoldenEntry> Entries() {
  auto idx = testing::LoadGoldenIndex();
  return idx.ok() ? *idx : std::vector<GoldenEntry>{};
}

TEST(GoldenIndex, CoversElevenLossyCodecsOnThreeInputs) { EXPECT_EQ(Entries().size(), 33u); }

INSTANTIATE_TEST_SUITE_P(Reference, Golden, ::testing::ValuesIn(Entries()),
                         [](const auto& info) { return info.param.input + "_" + info.param.codec; });

}  // namespace
}  // namespace kvs
