// identity, lossless_zstd and lossless_lz4: bit-exact, bf16 accepted, and corrupt compressed
// streams rejected.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "tests/testing/status_matchers.h"

namespace kvs {
namespace {

class Lossless : public ::testing::TestWithParam<std::string> {};

TEST_P(Lossless, BitExactOnRealisticKvAndBf16) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, CodecRegistry::Builtin().Create(GetParam()));
  EXPECT_FALSE(codec->info().lossy);
  const KvGeometry g{24, 8, 64, 128};
  OwnedKv kv = MakeSyntheticKv(g, 123);
  for (DType dt : {DType::kF16, DType::kBF16}) {
    KvCacheView in = kv.view();
    in.k.dtype = in.v.dtype = dt;
    KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, in, nullptr));
    OwnedKv out = OwnedKv::Zeros(g);
    MutableKvCacheView ov = out.mutable_view();
    ov.k.dtype = ov.v.dtype = dt;
    KVS_ASSERT_OK(DecodeFromVector(*codec, p, ov, nullptr));
    EXPECT_EQ(out.k, kv.k);
    EXPECT_EQ(out.v, kv.v);
    const double ratio = static_cast<double>(g.raw_bytes()) / p.size();
    if (GetParam() == "identity") {
      EXPECT_EQ(p.size(), 32u + g.raw_bytes());
    } else if (GetParam() == "lossless_zstd") {
      // fp16 with a few loud channels: zstd finds the redundant exponent bits.
      EXPECT_GT(ratio, 1.05);
    } else {
      EXPECT_GT(ratio, 0.99);
    }
  }
}

TEST_P(Lossless, RejectsCorruptStream) {
  if (GetParam() == "identity") GTEST_SKIP() << "identity has no stream to corrupt";
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, CodecRegistry::Builtin().Create(GetParam()));
  const KvGeometry g{2, 2, 64, 64};
  OwnedKv kv = OwnedKv::Zeros(g);  // compresses to a few bytes
  KVS_ASSERT_OK_AND_ASSIGN(auto p, EncodeToVector(*codec, kv.view(), nullptr));
  // The raw-length field says something else.
  std::vector<uint8_t> bad = p;
  bad[32] ^= 1;
  OwnedKv out = OwnedKv::Zeros(g);
  EXPECT_FALSE(DecodeFromVector(*codec, bad, out.mutable_view(), nullptr).ok());
  // A stream for a different geometry, relabelled: the frame's content size disagrees.
  OwnedKv smaller = OwnedKv::Zeros({2, 2, 32, 64});
  KVS_ASSERT_OK_AND_ASSIGN(auto q, EncodeToVector(*codec, smaller.view(), nullptr));
  std::vector<uint8_t> relabelled = q;
  std::memcpy(relabelled.data() + 16, p.data() + 16, 4);  // S := 64
  std::memcpy(relabelled.data() + 32, p.data() + 32, 8);  // raw length for S = 64
  EXPECT_FALSE(DecodeFromVector(*codec, relabelled, out.mutable_view(), nullptr).ok());
}

INSTANTIATE_TEST_SUITE_P(All, Lossless,
                         ::testing::Values("identity", "lossless_zstd", "lossless_lz4"),
                         [](const auto& i) { return i.param; });

}  // namespace
}  // namespace kvs
