// cascade_prune50_int4 on the GPU vs the CPU codec: payload bytes and decoded values equal (tolerance 0,
// tests/gpu/cuda_codec_harness.h), malformed payloads rejected by both.
#include <gtest/gtest.h>

#include "tests/gpu/cuda_codec_harness.h"

namespace kvs::gpu_test {
namespace {

class CudaCascadePrune50Int4Parity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaCascadePrune50Int4Parity, MatchesCpuCodec) {
  ExpectParity("cascade_prune50_int4", {}, MakeInput(GetParam().g, GetParam().input, GetParam().seed));
}
INSTANTIATE_TEST_SUITE_P(Shapes, CudaCascadePrune50Int4Parity, ::testing::ValuesIn(DefaultCases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(CudaCascadePrune50Int4Decode, RejectsACorruptHeader) {
  ExpectBothReject("cascade_prune50_int4", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[0] ^= 1; }, "header");
}

TEST(CudaCascadePrune50Int4, ShortSequencesAndZeroFillMatchCpuCodec) {
  for (int64_t s : {1, 3, 9, 10, 13}) {
    ExpectParity("cascade_prune50_int4", {}, MakeInput({2, 2, s, 64}, Input::kGaussian, 3));
  }
  CodecOptions o;
  o.prune_fill = PruneFill::kZero;
  ExpectParity("cascade_prune50_int4", o, MakeInput({3, 2, 130, 96}, Input::kRealistic, 7));
}

TEST(CudaCascadePrune50Int4Decode, RejectsBadPositions) {
  const KvGeometry g{2, 2, 16, 64};
  const OwnedKv kv = MakeInput(g, Input::kGaussian, 1);
  // k = 8 kept tokens: n = 2·2·8·64 = 2048 values per tensor, G = 16 groups; indices last.
  const size_t idx = 32 + 2 * (64 * 16 + 8 * 16);
  ExpectBothReject("cascade_prune50_int4", kv, [&](std::vector<uint8_t>& p) {
    p[idx + 4 * 3] = p[idx + 4 * 2];  // a repeated position
  }, "kept positions");
  ExpectBothReject("cascade_prune50_int4", kv, [&](std::vector<uint8_t>& p) { p[idx + 3] = 0x10; },
                   "kept positions");
}

}  // namespace
}  // namespace kvs::gpu_test
