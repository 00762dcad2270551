// fp8_e4m3 on the GPU vs the CPU codec: payload bytes and decoded values equal (tolerance 0,
// tests/gpu/cuda_codec_harness.h), malformed payloads rejected by both.
#include <gtest/gtest.h>

#include "common/cuda/cuda_util.h"
#include "kernels/cuda/layer_scaled.cuh"
#include "tests/testing/status_matchers.h"

#include "tests/gpu/cuda_codec_harness.h"

namespace kvs::gpu_test {
namespace {

class CudaFp8E4m3Parity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaFp8E4m3Parity, MatchesCpuCodec) {
  ExpectParity("fp8_e4m3", {}, MakeInput(GetParam().g, GetParam().input, GetParam().seed));
}
INSTANTIATE_TEST_SUITE_P(Shapes, CudaFp8E4m3Parity, ::testing::ValuesIn(DefaultCases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(CudaFp8E4m3Decode, RejectsACorruptHeader) {
  ExpectBothReject("fp8_e4m3", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[0] ^= 1; }, "header");
}

class CudaFp8E4m3Compat : public ::testing::TestWithParam<Case> {};

TEST_P(CudaFp8E4m3Compat, MatchesCpuCodec) {
  CodecOptions o;
  o.fp8_compat = true;
  ExpectParity("fp8_e4m3", o, MakeInput(GetParam().g, GetParam().input, GetParam().seed));
}
INSTANTIATE_TEST_SUITE_P(Shapes, CudaFp8E4m3Compat, ::testing::ValuesIn(DefaultCases()),
                         [](const auto& info) { return CaseName(info.param); });

TEST(CudaFp8E4m3Decode, RejectsUnknownFlags) {
  ExpectBothReject("fp8_e4m3", MakeInput({2, 2, 16, 64}, Input::kGaussian, 1),
                   [](std::vector<uint8_t>& p) { p[7] |= 0x40; }, "flags");
}

// The integer emulation (sm_80 code) gives the hardware conversion's codes (sm_89+ code) on every
// finite fp16 pattern, under four different layer scales; both equal the CPU codec's K codes.
TEST(CudaFp8E4m3, EmulationEqualsHardwareConversion) {
  const KvGeometry g{4, 1, 2048, 32};  // 65536 values per layer: every pattern once
  const OwnedKv kv = MakeInput(g, Input::kAllPatterns, 3);
  const size_t n = static_cast<size_t>(g.elements());
  KVS_ASSERT_OK_AND_ASSIGN(CudaStream stream, CudaStream::Create());
  KVS_ASSERT_OK_AND_ASSIGN(DeviceBuffer x, DeviceBuffer::Allocate(2 * n));
  KVS_ASSERT_OK_AND_ASSIGN(DeviceBuffer codes, DeviceBuffer::Allocate(2 * n + 16 * g.layers));
  KVS_ASSERT_OK_AND_ASSIGN(DeviceBuffer amax, DeviceBuffer::Allocate(8 * g.layers));
  // Stream-ordered: a pageable cudaMemcpy may return before its DMA lands.
  ASSERT_EQ(cudaMemcpyAsync(x.data(), kv.k.data(), 2 * n, cudaMemcpyHostToDevice, stream.get()),
            cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(amax.data(), 0, 8 * g.layers, stream.get()), cudaSuccess);
  uint8_t* hw = codes.data();
  uint8_t* emu = codes.data() + n;
  const cuda::LayerTensor t_hw{x.as<uint16_t>(), hw, hw + 2 * n};
  const cuda::LayerTensor t_emu{x.as<uint16_t>(), emu, hw + 2 * n + 8 * g.layers};
  KVS_ASSERT_OK(cuda::LaunchLayerEncode(cuda::LayerCode::kE4m3, &t_hw, 1, g,
                                        amax.as<uint32_t>(), stream.get()));
  KVS_ASSERT_OK(cuda::LaunchLayerEncode(cuda::LayerCode::kE4m3Emulated, &t_emu, 1, g,
                                        amax.as<uint32_t>() + g.layers, stream.get()));
  std::vector<uint8_t> host(2 * n + 16 * g.layers);
  ASSERT_EQ(cudaMemcpyAsync(host.data(), codes.data(), host.size(), cudaMemcpyDeviceToHost,
                            stream.get()),
            cudaSuccess);
  KVS_ASSERT_OK(stream.Synchronize());
  EXPECT_EQ(Compare(absl::MakeConstSpan(host.data(), n), absl::MakeConstSpan(host.data() + n, n)).count, 0u);
  EXPECT_EQ(Compare(absl::MakeConstSpan(host.data() + 2 * n, 4 * g.layers),
                    absl::MakeConstSpan(host.data() + 2 * n + 8 * g.layers, 4 * g.layers)).count, 0u);
  KVS_ASSERT_OK_AND_ASSIGN(auto cpu, CodecRegistry::Builtin().Create("fp8_e4m3"));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> payload, EncodeToVector(*cpu, kv.view(), nullptr));
  EXPECT_EQ(Compare(absl::MakeConstSpan(payload.data() + 32, n), absl::MakeConstSpan(host.data(), n)).count, 0u);
}

}  // namespace
}  // namespace kvs::gpu_test
