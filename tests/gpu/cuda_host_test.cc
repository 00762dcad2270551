// Host-side checks of the CUDA codec library, run on every build (no GPU needed):
// the scalar math the kernels share with the host (kernels/cuda/quant_math.cuh) against the CPU
// codecs' functions and the spec (CODECS.md §1.2), the codec table, sizes and limits, and the
// argument checks that run before any CUDA call.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "common/cuda/cuda_util.h"
#include "common/half/half.h"
#include "kernels/cpu/int8_layer.h"
#include "kernels/cuda/cuda_codec.h"
#include "kernels/cuda/quant_math.cuh"
#include "kernels/format/fp8_e4m3.h"
#include "tests/testing/status_matchers.h"

namespace kvs::cuda {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

bool IsFiniteHalfBits(uint16_t h) { return (h & 0x7C00) != 0x7C00; }

std::vector<float> AllFiniteHalfValues() {
  std::vector<float> v;
  for (uint32_t h = 0; h < 65536; ++h) {
    if (IsFiniteHalfBits(static_cast<uint16_t>(h))) v.push_back(HalfToFloat(static_cast<uint16_t>(h)));
  }
  return v;
}

// ---- fp8 E4M3 ----

TEST(CudaQuantMath, E4m3EncoderEqualsTheCpuOnFloatPatterns) {
  // Every 61st fp32 pattern (all exponents, both signs, NaN and inf included).
  // Through a volatile, so that the compiler cannot fold the two (identical) computations.
  int64_t mismatches = 0;
  volatile float vf = 0.0f;
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 61) {
    vf = BitsToFloat(static_cast<uint32_t>(u));
    const uint8_t ours = qm::E4m3FromFloat(vf);
    mismatches += ours != format::E4m3FromFloat(vf);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(CudaQuantMath, E4m3RoundsToNearestEvenAndSaturates) {
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    const float v = qm::E4m3ToFloat(code);
    if ((c & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v));
      EXPECT_TRUE(std::isnan(format::E4m3ToFloat(code)));
      continue;
    }
    EXPECT_EQ(FloatToBits(v), FloatToBits(format::E4m3ToFloat(code))) << c;
    EXPECT_EQ(qm::E4m3FromFloat(v), code) << c;  // representable values are exact
    // Midpoint to the next code up in magnitude: ties to the even code.
    if ((c & 0x7F) < 0x7E) {
      const float next = qm::E4m3ToFloat(static_cast<uint8_t>(c + 1));
      const float mid = static_cast<float>((static_cast<double>(v) + next) / 2);
      const uint8_t even = (c % 2 == 0) ? code : static_cast<uint8_t>(c + 1);
      EXPECT_EQ(qm::E4m3FromFloat(mid), even) << c;
    }
  }
  EXPECT_EQ(qm::E4m3FromFloat(1e9f), 0x7E);
  EXPECT_EQ(qm::E4m3FromFloat(-INFINITY), 0xFE);
  EXPECT_EQ(qm::E4m3FromFloat(449.0f), 0x7E);
  EXPECT_EQ(qm::E4m3FromFloat(-1e-30f), 0x80);
}

// ---- per-layer scaled codes ----

TEST(CudaQuantMath, Int8CodeEqualsTheCpuCodec) {
  const std::vector<float> xs = AllFiniteHalfValues();
  for (float amax : {1.0f, 3.14159f, 65504.0f, 6.1035156e-05f, 0.0f}) {
    const float scale = qm::LayerScale(amax, qm::kInt8Qmax);
    EXPECT_EQ(scale, int8l::Int8Scale(amax));
    for (float x : xs) {
      ASSERT_EQ(static_cast<uint8_t>(qm::Int8Code(x, scale)), int8l::Int8Code(x / scale))
          << x << " / " << scale;
    }
  }
}

TEST(CudaQuantMath, CompatCodeIsTheReferenceFormula) {
  const std::vector<float> xs = AllFiniteHalfValues();
  for (float amax : {1.0f, 7.5f, 65504.0f}) {
    const float scale = qm::LayerScale(amax, qm::kFp8CompatRange);
    EXPECT_EQ(scale, amax / 240.0f);
    for (float x : xs) {
      float r = std::nearbyint(x / scale + 128.0f);
      r = std::min(std::max(r, 0.0f), 255.0f);
      ASSERT_EQ(qm::CompatCode(x, scale), static_cast<uint8_t>(r)) << x;
    }
  }
  EXPECT_EQ(qm::LayerScale(0.0f, qm::kFp8CompatRange), 1.0f);
}

// ---- asymmetric codes ----

TEST(CudaQuantMath, AsymmetricParamsFollowTheDegenerateRules) {
  float scale, zero;
  qm::Int4Params(2.0f, 2.0f, &scale, &zero);  // max == min: scale 1
  EXPECT_EQ(scale, 1.0f);
  EXPECT_EQ(zero, 2.0f);
  qm::Int4Params(-0.0f, 3.0f, &scale, &zero);  // -0 stored as +0
  EXPECT_EQ(FloatToBits(zero), 0u);
  EXPECT_EQ(scale, 3.0f / 15.0f);
  qm::RangeParams(1.5f, 1.5f, 3.0f, &scale, &zero);  // zero range counts as 1
  EXPECT_EQ(scale, 1.0f / 3.0f);
  EXPECT_EQ(zero, 1.5f);
  qm::RangeParams(-0.0f, 0.0f, 255.0f, &scale, &zero);
  EXPECT_EQ(scale, 1.0f / 255.0f);
  EXPECT_EQ(FloatToBits(zero), 0u);
}

TEST(CudaQuantMath, AsymCodeRoundsHalfToEvenAndClips) {
  // (x - zero) / scale lands exactly on .5: ties go to even.
  EXPECT_EQ(qm::AsymCode(0.5f, 0.0f, 1.0f, 3.0f), 0u);
  EXPECT_EQ(qm::AsymCode(1.5f, 0.0f, 1.0f, 3.0f), 2u);
  EXPECT_EQ(qm::AsymCode(2.5f, 0.0f, 1.0f, 3.0f), 2u);
  EXPECT_EQ(qm::AsymCode(9.0f, 0.0f, 1.0f, 3.0f), 3u);
  EXPECT_EQ(qm::AsymCode(-4.0f, 0.0f, 1.0f, 15.0f), 0u);
  EXPECT_EQ(qm::AsymCode(NAN, 0.0f, 1.0f, 15.0f), 0u);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  for (int i = 0; i < 100000; ++i) {
    const float lo = u(rng), hi = lo + std::fabs(u(rng)), x = u(rng);
    float scale, zero;
    qm::RangeParams(lo, hi, 15.0f, &scale, &zero);
    float r = std::nearbyint((x - zero) / scale);
    r = std::min(std::max(r, 0.0f), 15.0f);
    ASSERT_EQ(qm::AsymCode(x, zero, scale, 15.0f), static_cast<uint32_t>(r));
    ASSERT_EQ(qm::Dequant(r, scale, zero), r * scale + zero);
  }
}

// ---- order keys and exact magnitudes ----

TEST(CudaQuantMath, OrderKeysSortLikeTheValues) {
  std::vector<uint16_t> finite;
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    EXPECT_EQ(qm::KeyToHalf(qm::OrderKey(b)), b);
    if (IsFiniteHalfBits(b) || (b & 0x3FF) == 0) finite.push_back(b);  // numbers and infinities
  }
  std::sort(finite.begin(), finite.end(), [](uint16_t a, uint16_t b) {
    return qm::OrderKey(a) < qm::OrderKey(b);
  });
  for (size_t i = 1; i < finite.size(); ++i) {
    ASSERT_LE(HalfToFloat(finite[i - 1]), HalfToFloat(finite[i]))
        << std::hex << finite[i - 1] << " " << finite[i];
  }
}

TEST(CudaQuantMath, AbsFixedIsExactMagnitudeIn2ToMinus24) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    if (!qm::IsFiniteHalf(b)) continue;
    ASSERT_EQ(std::ldexp(static_cast<double>(qm::AbsFixed(b)), -24),
              std::fabs(static_cast<double>(HalfToFloat(b))))
        << std::hex << h;
  }
  EXPECT_LT(qm::AbsFixed(0x7BFF), uint64_t{1} << 40);
  EXPECT_FALSE(qm::IsFiniteHalf(0x7C00));
  EXPECT_FALSE(qm::IsFiniteHalf(0xFE00));
}

// ---- top-k scores ----

// NumPy's pairwise summation of x[i]² (numpy/core/src/umath/loops_utils.h.src, blocksize 128,
// unroll 8) over fp32, written independently of quant_math.cuh.
float NumpyPairwise(const float* a, int n) {
  if (n < 8) {
    float res = 0.0f;
    for (int i = 0; i < n; ++i) res += a[i] * a[i];
    return res;
  }
  if (n <= 128) {
    float r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j] * a[j];
    int i;
    for (i = 8; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + j] * a[i + j];
    }
    float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i] * a[i];
    return res;
  }
  int n2 = n / 2;
  n2 -= n2 % 8;
  return NumpyPairwise(a, n2) + NumpyPairwise(a + n2, n - n2);
}

TEST(CudaQuantMath, PairwiseSumSqIsNumpysOrder) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (int n : {1, 5, 8, 64, 96, 120, 128, 136, 192, 200, 256}) {
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<uint16_t> h(n);
      std::vector<float> f(n);
      for (int i = 0; i < n; ++i) {
        h[i] = FloatToHalf(nd(rng));
        f[i] = HalfToFloat(h[i]);
      }
      ASSERT_EQ(FloatToBits(qm::PairwiseSumSq(h.data(), n)), FloatToBits(NumpyPairwise(f.data(), n)))
          << "n = " << n;
    }
  }
}

TEST(CudaQuantMath, ScoreKeysRankNanFirstAndZerosEqual) {
  const float order[] = {-INFINITY, -1.0f, 0.0f, 1e-30f, 1.0f, 3e38f, INFINITY, NAN};
  for (size_t i = 1; i < std::size(order); ++i) {
    EXPECT_LT(qm::ScoreKey(order[i - 1]), qm::ScoreKey(order[i])) << i;
  }
  EXPECT_EQ(qm::ScoreKey(-0.0f), qm::ScoreKey(0.0f));
  EXPECT_EQ(qm::ScoreKey(-NAN), qm::ScoreKey(NAN));
}

// ---- the codec table, sizes and limits ----

TEST(CudaCodecTable, HasTheNineCodecsSortedByName) {
  std::vector<std::string> names;
  for (const CudaCodec* c : CudaCodecs()) names.emplace_back(c->name);
  EXPECT_THAT(names, ::testing::ElementsAre("cachegen", "cascade_prune50_int4", "fp8_e4m3",
                                            "kivi_2bit", "kvquant_2bit", "mixed_k8v4",
                                            "topk_prune_50", "uniform_int4", "uniform_int8"));
  for (const CudaCodec* c : CudaCodecs()) {
    EXPECT_EQ(FindCudaCodec(c->name), c);
    KVS_ASSERT_OK_AND_ASSIGN(auto cpu, CodecRegistry::Builtin().Create(c->name));
    EXPECT_EQ(cpu->info().id, c->id) << c->name;
  }
  EXPECT_EQ(FindCudaCodec("palu_lr"), nullptr);
}

TEST(CudaCodecTable, SizesEqualTheCpuCodecs) {
  const KvGeometry geoms[] = {{32, 8, 1024, 128},  // Llama-3.1-8B
                              {80, 8, 1024, 128},  // Llama-3.1-70B
                              {32, 8, 8192, 128},  {4, 2, 32, 64}, {2, 4, 50, 96},
                              {3, 3, 37, 8},       {1, 1, 1, 256}};
  for (const CudaCodec* c : CudaCodecs()) {
    KVS_ASSERT_OK_AND_ASSIGN(auto cpu, CodecRegistry::Builtin().Create(c->name));
    for (const KvGeometry& g : geoms) {
      KVS_ASSERT_OK(c->can_encode(g));
      KVS_ASSERT_OK_AND_ASSIGN(size_t want, cpu->MaxEncodedBytes(g));
      EXPECT_EQ(c->encoded_bytes(g), want) << c->name << " " << g.ToString();
      EXPECT_GE(c->workspace_bytes(g), 256u);
      EXPECT_EQ(c->workspace_bytes(g) % 256, 0u);
    }
  }
}

TEST(CudaCodecTable, LimitsAreReportedNotCrashed) {
  for (const CudaCodec* c : CudaCodecs()) {
    EXPECT_THAT(c->can_encode({2, 2, 16, 100}),
                StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("multiple of 8")));
    EXPECT_THAT(c->can_encode({2, 2, 16, 512}), StatusIs(absl::StatusCode::kUnimplemented, ::testing::_));
    EXPECT_THAT(c->can_encode({0, 2, 16, 64}), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
    // Llama-3.1-70B at 32K tokens: 5.4 GB of int8 codes, over the header's 4 GiB.
    KVS_ASSERT_OK_AND_ASSIGN(auto cpu, CodecRegistry::Builtin().Create(c->name));
    const KvGeometry big{80, 8, 32768, 128};
    EXPECT_EQ(c->can_encode(big).code(), cpu->MaxEncodedBytes(big).status().code()) << c->name;
  }
}

TEST(CudaStatus, MapsRuntimeErrorsToStatusCodes) {
  KVS_EXPECT_OK(CudaStatus(cudaSuccess, "x"));
  EXPECT_THAT(CudaStatus(cudaErrorMemoryAllocation, "cudaMalloc"),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("cudaMalloc: ")));
  EXPECT_THAT(CudaStatus(cudaErrorInsufficientDriver, "x"),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_THAT(CudaStatus(cudaErrorLaunchFailure, "launch"),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("cudaErrorLaunchFailure")));
  // Without a driver (CI) the count is an error, never a crash; with one it is a number.
  const absl::StatusOr<int> n = CudaDeviceCount();
  if (!n.ok()) {
    EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(CudaCodecTable, RejectsBadBuffersBeforeTouchingTheDevice) {
  const CudaCodec* c = FindCudaCodec("uniform_int8");
  const KvGeometry g{2, 2, 16, 64};
  alignas(16) static uint8_t buf[1 << 16];
  const uint16_t* x = reinterpret_cast<const uint16_t*>(buf);
  const DeviceBytes payload{buf, c->encoded_bytes(g)}, ws{buf, c->workspace_bytes(g)};
  EXPECT_THAT(c->encode({nullptr, x, g}, {}, payload, ws, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
  EXPECT_THAT(c->encode({x + 1, x, g}, {}, payload, ws, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("16-byte aligned")));
  EXPECT_THAT(c->encode({x, x, g}, {}, {buf, payload.size - 1}, ws, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("payload buffer")));
  EXPECT_THAT(c->encode({x, x, g}, {}, payload, {buf, 16}, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("workspace")));
  uint16_t* y = reinterpret_cast<uint16_t*>(buf);
  EXPECT_THAT(c->decode({buf, payload.size + 1}, {y, y, g}, ws, nullptr, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("geometry")));
}

}  // namespace
}  // namespace kvs::cuda
