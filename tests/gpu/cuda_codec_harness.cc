#include "tests/gpu/cuda_codec_harness.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_util.h"
#include "common/status/status.h"
#include "common/thread_pool/thread_pool.h"
#include "tests/testing/status_matchers.h"

namespace kvs::gpu_test {
namespace {

ThreadPool* Pool() {
  static ThreadPool* pool = new ThreadPool(std::max(1u, std::thread::hardware_concurrency()));
  return pool;
}

absl::StatusOr<DeviceBuffer> Upload(const void* src, size_t bytes, cudaStream_t stream) {
  KVS_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::Allocate(bytes));
  KVS_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(buf.data(), src, bytes, cudaMemcpyHostToDevice, stream));
  return buf;
}

absl::Status Download(void* dst, const DeviceBuffer& buf, size_t bytes, cudaStream_t stream) {
  KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, buf.data(), bytes, cudaMemcpyDeviceToHost, stream));
  return CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

}  // namespace

const char* InputName(Input in) {
  switch (in) {
    case Input::kGaussian:
      return "gaussian";
    case Input::kRealistic:
      return "realistic";
    case Input::kAllPatterns:
      return "all_patterns";
    case Input::kConstant:
      return "constant";
    case Input::kZeros:
      return "zeros";
  }
  return "?";
}

OwnedKv MakeInput(const KvGeometry& g, Input in, uint64_t seed) {
  switch (in) {
    case Input::kGaussian:
      return MakeSyntheticKv(g, seed, SynthKind::kGaussian);
    case Input::kRealistic:
      return MakeSyntheticKv(g, seed, SynthKind::kRealistic);
    default:
      break;
  }
  OwnedKv kv = OwnedKv::Zeros(g);
  for (int t = 0; t < 2; ++t) {
    std::vector<uint16_t>& x = t == 0 ? kv.k : kv.v;
    for (size_t i = 0; i < x.size(); ++i) {
      if (in == Input::kConstant) {
        x[i] = t == 0 ? 0x3C00 : 0xC000;  // 1.0 and -2.0
      } else if (in == Input::kAllPatterns) {
        // 40503 is odd, so i -> pattern cycles through all 65536; non-finite ones become finite.
        uint16_t h = static_cast<uint16_t>(i * 40503u + seed * 7919u + t * 12345u);
        if ((h & 0x7C00u) == 0x7C00u) h &= 0xFBFFu;
        x[i] = h;
      }
    }
  }
  return kv;
}

std::string CaseName(const Case& c) {
  return absl::StrCat(c.g.layers, "x", c.g.heads, "x", c.g.tokens, "x", c.g.head_dim, "_",
                      InputName(c.input), "_seed", c.seed);
}

void PrintTo(const Case& c, std::ostream* os) { *os << CaseName(c); }

const cuda::CudaCodec& CudaCodecOrDie(absl::string_view name) {
  const cuda::CudaCodec* c = cuda::FindCudaCodec(name);
  if (c == nullptr) {
    ADD_FAILURE() << "no CUDA codec " << name;
    std::abort();
  }
  return *c;
}

absl::StatusOr<std::vector<uint8_t>> GpuEncode(const cuda::CudaCodec& codec, const OwnedKv& kv,
                                               const CodecOptions& options) {
  const KvGeometry& g = kv.geom;
  KVS_RETURN_IF_ERROR(codec.can_encode(g));
  KVS_ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create());
  const size_t bytes = 2 * static_cast<size_t>(g.elements());
  KVS_ASSIGN_OR_RETURN(DeviceBuffer k, Upload(kv.k.data(), bytes, stream.get()));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer v, Upload(kv.v.data(), bytes, stream.get()));
  std::vector<uint8_t> payload(codec.encoded_bytes(g));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer p, DeviceBuffer::Allocate(payload.size()));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer ws, DeviceBuffer::Allocate(codec.workspace_bytes(g)));
  // Poison: a byte the encoder forgets to write shows up as a mismatch.
  KVS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p.data(), 0xA5, p.size(), stream.get()));
  KVS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(ws.data(), 0x5A, ws.size(), stream.get()));
  KVS_RETURN_IF_ERROR(codec.encode({k.as<uint16_t>(), v.as<uint16_t>(), g}, options,
                                   {p.data(), p.size()}, {ws.data(), ws.size()}, stream.get()));
  KVS_RETURN_IF_ERROR(Download(payload.data(), p, payload.size(), stream.get()));
  return payload;
}

absl::Status GpuDecode(const cuda::CudaCodec& codec, absl::Span<const uint8_t> payload,
                       OwnedKv* out, std::vector<uint8_t>* keep_mask) {
  const KvGeometry& g = out->geom;
  KVS_ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create());
  KVS_ASSIGN_OR_RETURN(DeviceBuffer p, Upload(payload.data(), payload.size(), stream.get()));
  const size_t bytes = 2 * static_cast<size_t>(g.elements());
  KVS_ASSIGN_OR_RETURN(DeviceBuffer k, DeviceBuffer::Allocate(bytes));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer v, DeviceBuffer::Allocate(bytes));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer ws, DeviceBuffer::Allocate(codec.workspace_bytes(g)));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer mask, DeviceBuffer::Allocate(g.tokens));
  // Poison outputs (0x7F7F is an fp16 NaN) and workspace.
  KVS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(k.data(), 0x7F, bytes, stream.get()));
  KVS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(v.data(), 0x7F, bytes, stream.get()));
  KVS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(ws.data(), 0x5A, ws.size(), stream.get()));
  KVS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(mask.data(), 0x77, g.tokens, stream.get()));
  const cuda::DeviceBytes wsb{ws.data(), ws.size()};
  KVS_RETURN_IF_ERROR(codec.decode({p.data(), p.size()}, {k.as<uint16_t>(), v.as<uint16_t>(), g},
                                   wsb, stream.get(), keep_mask ? mask.data() : nullptr));
  const absl::Status valid = cuda::DecodeStatus(wsb, stream.get());
  KVS_RETURN_IF_ERROR(Download(out->k.data(), k, bytes, stream.get()));
  KVS_RETURN_IF_ERROR(Download(out->v.data(), v, bytes, stream.get()));
  if (keep_mask != nullptr) {
    keep_mask->resize(g.tokens);
    KVS_RETURN_IF_ERROR(Download(keep_mask->data(), mask, g.tokens, stream.get()));
  }
  return valid;
}

const std::vector<Case>& DefaultCases() {
  static const auto* cases = new std::vector<Case>{
      {{4, 2, 32, 64}, Input::kGaussian, 42},      // the KVShuttle "small" fixture
      {{3, 2, 130, 128}, Input::kRealistic, 7},    // S not a multiple of 10 or 4
      {{2, 4, 50, 96}, Input::kRealistic, 123},    // D = 96: int4 groups straddle tokens
      {{2, 3, 37, 8}, Input::kAllPatterns, 1},     // every fp16 pattern; D = 8; odd N/128
      {{2, 1, 41, 256}, Input::kAllPatterns, 2},   // D = 256
      {{2, 2, 20, 64}, Input::kConstant, 0},       // zero ranges, tied scores
      {{1, 2, 16, 64}, Input::kZeros, 0},          // amax 0
      {{8, 8, 1024, 128}, Input::kRealistic, 1234},  // Llama-3.1-8B heads, 8 layers
  };
  return *cases;
}

Diff Compare(absl::Span<const uint8_t> a, absl::Span<const uint8_t> b) {
  Diff d;
  if (a.size() != b.size()) {
    d.count = std::max(a.size(), b.size());
    d.first = static_cast<int64_t>(std::min(a.size(), b.size()));
    return d;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) {
      if (d.first < 0) d.first = static_cast<int64_t>(i);
      ++d.count;
    }
  }
  return d;
}

Diff Compare(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  return Compare(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(a.data()), 2 * a.size()),
                 absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(b.data()), 2 * b.size()));
}

void ExpectParity(absl::string_view name, const CodecOptions& options, const OwnedKv& kv) {
  const KvGeometry& g = kv.geom;
  SCOPED_TRACE(absl::StrCat(name, " ", g.ToString()));
  const cuda::CudaCodec& gpu = CudaCodecOrDie(name);
  KVS_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Codec> cpu, CodecRegistry::Builtin().Create(name, options));
  ASSERT_EQ(gpu.encoded_bytes(g), *cpu->MaxEncodedBytes(g));

  KVS_ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> cpu_payload, EncodeToVector(*cpu, kv.view(), Pool()));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> gpu_payload, GpuEncode(gpu, kv, options));
  const Diff pd = Compare(cpu_payload, gpu_payload);
  EXPECT_EQ(pd.count, 0u) << "payload bytes differ from the CPU codec's, first at offset "
                          << pd.first << " of " << cpu_payload.size();

  // Each decoder on each payload: all four must give the CPU decoder's bits on its own payload.
  const auto& payloads = pd.count == 0
                             ? std::vector<const std::vector<uint8_t>*>{&cpu_payload}
                             : std::vector<const std::vector<uint8_t>*>{&cpu_payload, &gpu_payload};
  for (const std::vector<uint8_t>* payload : payloads) {
    SCOPED_TRACE(payload == &cpu_payload ? "CPU payload" : "GPU payload");
    OwnedKv want = OwnedKv::Zeros(g), got = OwnedKv::Zeros(g);
    std::vector<uint8_t> want_mask(g.tokens, 9), got_mask;
    KVS_ASSERT_OK(DecodeFromVector(*cpu, *payload, want.mutable_view(), Pool(),
                                   absl::MakeSpan(want_mask)));
    KVS_ASSERT_OK(GpuDecode(gpu, *payload, &got, &got_mask));
    const Diff kd = Compare(want.k, got.k), vd = Compare(want.v, got.v);
    EXPECT_EQ(kd.count, 0u) << "decoded K differs from the CPU decoder's, first at byte " << kd.first;
    EXPECT_EQ(vd.count, 0u) << "decoded V differs from the CPU decoder's, first at byte " << vd.first;
    EXPECT_EQ(want_mask, got_mask) << "keep_mask differs";
  }
}

void ExpectBothReject(absl::string_view name, const OwnedKv& kv,
                      const std::function<void(std::vector<uint8_t>&)>& corrupt,
                      absl::string_view gpu_says) {
  const KvGeometry& g = kv.geom;
  const cuda::CudaCodec& gpu = CudaCodecOrDie(name);
  KVS_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Codec> cpu, CodecRegistry::Builtin().Create(name));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> payload, EncodeToVector(*cpu, kv.view(), Pool()));
  corrupt(payload);
  OwnedKv out = OwnedKv::Zeros(g);
  EXPECT_THAT(DecodeFromVector(*cpu, payload, out.mutable_view(), Pool()),
              testing::StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(GpuDecode(gpu, payload, &out, nullptr),
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr(std::string(gpu_says))));
}

}  // namespace kvs::gpu_test
