// tests/gpu/cuda_codec_harness.h — GPU-vs-CPU checks shared by the per-codec CUDA tests.
//
// The CPU codec (kernels/cpu, the oracle) and the CUDA codec of the same name must agree:
//   - payload bytes: GPU encode == CPU encode, byte for byte (every CUDA codec does the CPU's
//     fp32 math, so the tolerance is zero — stricter than "within one quantisation step");
//   - decode: the GPU decoder and the CPU decoder give the same fp16 bits on the CPU's payload
//     and on the GPU's payload (cross-decoding), and the same keep_mask;
//   - malformed payloads: rejected by both (DecodeStatus on the GPU), never a crash.
// Binaries linking this run under gpu_test_main.cc, which exits 77 (ctest: skipped) when there is
// no CUDA device.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/cuda/cuda_codec.h"

namespace kvs::gpu_test {

enum class Input {
  kGaussian,     // N(0, 1) (MakeSyntheticKv kGaussian)
  kRealistic,    // outlier channels, per-layer scales (MakeSyntheticKv kRealistic)
  kAllPatterns,  // every finite fp16 bit pattern, subnormals and ±65504 included, shuffled
  kConstant,     // one value everywhere: zero ranges, score ties
  kZeros,        // all +0: amax 0
};
const char* InputName(Input in);
OwnedKv MakeInput(const KvGeometry& g, Input in, uint64_t seed);

// One table row of a per-codec test.
struct Case {
  KvGeometry g;
  Input input;
  uint64_t seed;
};
std::string CaseName(const Case& c);
void PrintTo(const Case& c, std::ostream* os);  // gtest's parameter printer
// Shapes and inputs every CUDA codec is checked on (codec tests add their own).
const std::vector<Case>& DefaultCases();

const cuda::CudaCodec& CudaCodecOrDie(absl::string_view name);

// Encodes kv on the GPU (upload, encode, download).
absl::StatusOr<std::vector<uint8_t>> GpuEncode(const cuda::CudaCodec& codec, const OwnedKv& kv,
                                               const CodecOptions& options);
// Decodes payload on the GPU into *out (geometry set by the caller); keep_mask (S bytes) when
// non-null. Returns the launch status, then the device-side validation (DecodeStatus).
absl::Status GpuDecode(const cuda::CudaCodec& codec, absl::Span<const uint8_t> payload,
                       OwnedKv* out, std::vector<uint8_t>* keep_mask);

// The parity checks above, as gtest expectations, for one codec, options and input.
void ExpectParity(absl::string_view codec, const CodecOptions& options, const OwnedKv& kv);

// Encodes kv on the CPU, applies `corrupt` to the payload, and expects both decoders to reject
// it: the CPU with InvalidArgument, the GPU through DecodeStatus with a message containing
// `gpu_says`.
void ExpectBothReject(absl::string_view codec, const OwnedKv& kv,
                      const std::function<void(std::vector<uint8_t>&)>& corrupt,
                      absl::string_view gpu_says);

// Bytes that differ (and the first such offset, or -1) — for readable failure messages.
struct Diff {
  size_t count = 0;
  int64_t first = -1;
};
Diff Compare(absl::Span<const uint8_t> a, absl::Span<const uint8_t> b);
Diff Compare(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b);

}  // namespace kvs::gpu_test
