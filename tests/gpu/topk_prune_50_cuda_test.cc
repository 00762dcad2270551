// topk_prune_50 on the GPU vs the CPU codec: payload bytes and decoded values equal (tolerance 0,
// tests/gpu/cuda_codec_harness.h), malformed payloads rejected by both.
#include <gtest/gtest.h>
#include <algorithm>

#include "tests/gpu/cuda_codec_harness.h"

namespace kvs::gpu_test {
namespace {

class CudaTopkPrune50Parity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaTopkPrune50Parity, MatchesCpuCodec) {
  ExpectParity("topk_prune_50", {}, MakeInput(GetParam().g, GetParam().input, GetParam().seed));
}
INSTANTIATE_TEST_SUITE_P(Shapes, CudaTopkPrune50Parity, ::testing::ValuesIn(DefaultCases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(CudaTopkPrune50Decode, RejectsACorruptHeader) {
  ExpectBothReject("topk_prune_50", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[0] ^= 1; }, "header");
}

// S below 10 keeps protected positions only; S = 10, 11, 12 the first with scored candidates.
TEST(CudaTopkPrune50, ShortSequencesMatchCpuCodec) {
  for (int64_t s : {1, 2, 3, 5, 9, 10, 11, 12}) {
    ExpectParity("topk_prune_50", {}, MakeInput({2, 2, s, 64}, Input::kGaussian, 3));
  }
}

TEST(CudaTopkPrune50, ZeroFillMatchesCpuCodec) {
  CodecOptions o;
  o.prune_fill = PruneFill::kZero;
  ExpectParity("topk_prune_50", o, MakeInput({3, 2, 130, 128}, Input::kRealistic, 7));
}

// Long sequences: several rounds of the ordered compaction (1024 positions each).
TEST(CudaTopkPrune50, LongSequenceMatchesCpuCodec) {
  ExpectParity("topk_prune_50", {}, MakeInput({2, 2, 5000, 64}, Input::kRealistic, 8));
  ExpectParity("topk_prune_50", {}, MakeInput({2, 2, 3000, 64}, Input::kConstant, 0));
}

TEST(CudaTopkPrune50Decode, RejectsBadPositions) {
  const KvGeometry g{2, 2, 16, 64};
  const size_t idx = 32 + 4 * 2 * 2 * 8 * 64;  // after K_kept and V_kept (k = 8)
  const OwnedKv kv = MakeInput(g, Input::kGaussian, 1);
  ExpectBothReject("topk_prune_50", kv, [&](std::vector<uint8_t>& p) {
    std::swap_ranges(p.begin() + idx, p.begin() + idx + 4, p.begin() + idx + 4);
  }, "kept positions");
  ExpectBothReject("topk_prune_50", kv, [&](std::vector<uint8_t>& p) { p[idx + 4 * 7 + 1] = 1; },
                   "kept positions");
  ExpectBothReject("topk_prune_50", kv, [](std::vector<uint8_t>& p) { p[7] |= 0x80; }, "flags");
}

}  // namespace
}  // namespace kvs::gpu_test
