// uniform_int8 on the GPU vs the CPU codec: payload bytes and decoded values equal (tolerance 0,
// tests/gpu/cuda_codec_harness.h), malformed payloads rejected by both.
#include <gtest/gtest.h>

#include "tests/gpu/cuda_codec_harness.h"

namespace kvs::gpu_test {
namespace {

class CudaUniformInt8Parity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaUniformInt8Parity, MatchesCpuCodec) {
  ExpectParity("uniform_int8", {}, MakeInput(GetParam().g, GetParam().input, GetParam().seed));
}
INSTANTIATE_TEST_SUITE_P(Shapes, CudaUniformInt8Parity, ::testing::ValuesIn(DefaultCases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(CudaUniformInt8Decode, RejectsACorruptHeader) {
  ExpectBothReject("uniform_int8", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[0] ^= 1; }, "header");
}

}  // namespace
}  // namespace kvs::gpu_test
