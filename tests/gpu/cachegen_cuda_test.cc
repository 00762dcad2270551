// cachegen on the GPU vs the CPU codec: payload bytes and decoded values equal (tolerance 0,
// tests/gpu/cuda_codec_harness.h), malformed payloads rejected by both.
#include <gtest/gtest.h>

#include "tests/gpu/cuda_codec_harness.h"

namespace kvs::gpu_test {
namespace {

class CudaCachegenParity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaCachegenParity, MatchesCpuCodec) {
  ExpectParity("cachegen", {}, MakeInput(GetParam().g, GetParam().input, GetParam().seed));
}
INSTANTIATE_TEST_SUITE_P(Shapes, CudaCachegenParity, ::testing::ValuesIn(DefaultCases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(CudaCachegenDecode, RejectsACorruptHeader) {
  ExpectBothReject("cachegen", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[0] ^= 1; }, "header");
}

// S = 1 (a one-token chunk: delta scale 1, zero 0), 11 and 21 (a one-token last chunk), 19.
TEST(CudaCachegen, ShortAndRaggedChunksMatchCpuCodec) {
  for (int64_t s : {1, 11, 19, 21}) {
    ExpectParity("cachegen", {}, MakeInput({2, 2, s, 64}, Input::kRealistic, 5));
  }
}

TEST(CudaCachegenDecode, RejectsAWrongRecordHeader) {
  const KvGeometry g{2, 2, 16, 64};
  ExpectBothReject("cachegen", MakeInput(g, Input::kGaussian, 1), [&](std::vector<uint8_t>& p) {
    const size_t record = (p.size() - 32) / (2 * g.layers * g.heads);
    p[32 + 3 * record + 4] ^= 2;  // record 3's delta byte count
  }, "cachegen record");
}

}  // namespace
}  // namespace kvs::gpu_test
