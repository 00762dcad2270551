// kivi_2bit on the GPU vs the CPU codec: payload bytes and decoded values equal (tolerance 0,
// tests/gpu/cuda_codec_harness.h), malformed payloads rejected by both.
#include <gtest/gtest.h>

#include "tests/gpu/cuda_codec_harness.h"

namespace kvs::gpu_test {
namespace {

class CudaKivi2BitParity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaKivi2BitParity, MatchesCpuCodec) {
  ExpectParity("kivi_2bit", {}, MakeInput(GetParam().g, GetParam().input, GetParam().seed));
}
INSTANTIATE_TEST_SUITE_P(Shapes, CudaKivi2BitParity, ::testing::ValuesIn(DefaultCases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(CudaKivi2BitDecode, RejectsACorruptHeader) {
  ExpectBothReject("kivi_2bit", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[0] ^= 1; }, "header");
}

// One token: every key channel has a zero range (scale 1/3).
TEST(CudaKivi2Bit, SingleTokenMatchesCpuCodec) {
  ExpectParity("kivi_2bit", {}, MakeInput({3, 2, 1, 128}, Input::kGaussian, 9));
}

}  // namespace
}  // namespace kvs::gpu_test
