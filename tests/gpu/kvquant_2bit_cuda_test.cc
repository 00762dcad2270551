// kvquant_2bit on the GPU vs the CPU codec: payload bytes and decoded values equal (tolerance 0,
// tests/gpu/cuda_codec_harness.h), malformed payloads rejected by both.
#include <gtest/gtest.h>
#include <algorithm>

#include "tests/gpu/cuda_codec_harness.h"

namespace kvs::gpu_test {
namespace {

class CudaKvquant2BitParity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaKvquant2BitParity, MatchesCpuCodec) {
  ExpectParity("kvquant_2bit", {}, MakeInput(GetParam().g, GetParam().input, GetParam().seed));
}
INSTANTIATE_TEST_SUITE_P(Shapes, CudaKvquant2BitParity, ::testing::ValuesIn(DefaultCases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(CudaKvquant2BitDecode, RejectsACorruptHeader) {
  ExpectBothReject("kvquant_2bit", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[0] ^= 1; }, "header");
}

// Body offsets of the K blob's sections (kernels/format/kvquant_2bit.h), D = 64: n_out = 1.
constexpr size_t kBlob = 32, kLens = kBlob, kCounts = kBlob + 28, kOutlier = kCounts + 8,
                 kNormal = kOutlier + 4;

TEST(CudaKvquant2BitDecode, RejectsWrongSectionLengths) {
  ExpectBothReject("kvquant_2bit", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[kLens + 4 * 3] ^= 1; }, "section lengths");
}

TEST(CudaKvquant2BitDecode, RejectsUnsortedOrOverlappingChannels) {
  const OwnedKv kv = MakeInput({2, 2, 16, 64}, Input::kGaussian, 1);
  ExpectBothReject("kvquant_2bit", kv, [](std::vector<uint8_t>& p) {
    std::swap_ranges(p.begin() + kNormal, p.begin() + kNormal + 4, p.begin() + kNormal + 4);
  }, "channel lists");
  ExpectBothReject("kvquant_2bit", kv, [](std::vector<uint8_t>& p) {
    std::copy(p.begin() + kNormal, p.begin() + kNormal + 4, p.begin() + kOutlier);
  }, "channel lists");
  ExpectBothReject("kvquant_2bit", kv, [](std::vector<uint8_t>& p) { p[kOutlier + 2] = 1; },
                   "channel lists");
}

}  // namespace
}  // namespace kvs::gpu_test
