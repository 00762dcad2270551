// kvshuttle's codecs against the KVShuttle reference implementation's own outputs
// (tests/data/golden, produced by its Python/NumPy code on fixed inputs; see README there).
//
// For every (input, codec) of the golden index, on both the reference and the fast path:
// - decode(encode(x)) equals the reference output bit for bit in all but at most 0.1 % of the
//   elements (the README's "rounding differences of at most one quantisation step in a small
//   fraction of elements"; per-codec tests bound the size of those differences); palu_lr, whose
//   SVD agrees only to fp16/SVD precision, must instead be within 0.2 % relative Frobenius error
//   of the reference output, and palu_int4 must match its error against the input (see below);
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
    if (e.codec == "palu_lr") {
      EXPECT_LT(RelativeFrobenius(got.k, want.k), 2e-3);
      EXPECT_LT(RelativeFrobenius(got.v, want.v), 2e-3);
      continue;
    }
    if (e.codec == "palu_int4") {
      // The INT4 groups span 4 rows of the [S+D, r] factor matrix, so the quantised factors depend
      // on the sign each SVD implementation gives its singular vectors (LAPACK's gesdd in the
      // reference, ours here): outputs cannot be compared element-wise. What must agree is the
      // reconstruction error against the input. For V it agrees within 3 %. For K, whose outlier
      // channels make US rows 10-100x larger than V rows inside one group, the error is about 100 %
      // of the signal for both implementations and swings with the signs (measured ratio ours/ref
      // 0.83-1.27 on the three inputs): K must agree within a factor of 1.35. palu_lr (the same SVD
      // without INT4) and uniform_int4 (the same quantiser) are compared element-wise above.
      for (int t = 0; t < 2; ++t) {
        const double ours = RelativeFrobenius(t == 0 ? got.k : got.v, t == 0 ? in.k : in.v);
        const double ref = RelativeFrobenius(t == 0 ? want.k : want.v, t == 0 ? in.k : in.v);
        if (t == 0) {
          EXPECT_LT(ours, 1.35 * ref) << "K error vs input";
          EXPECT_GT(ours, ref / 1.35) << "K error vs input";
        } else {
          EXPECT_NEAR(ours, ref, 0.03 * ref) << "V error vs input";
        }
      }
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
