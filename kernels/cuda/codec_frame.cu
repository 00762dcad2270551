// Shared host side of the CUDA codecs: limits, argument checks, header prologues, status word.
#include "kernels/cuda/codec_frame.cuh"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_util.h"
#include "kernels/cuda/device_common.cuh"

namespace kvs::cuda {
namespace {

constexpr int kPrologueThreads = 256;
constexpr unsigned kPrologueMaxBlocks = 256;

struct HeaderWords {
  uint32_t w[8];
};
HeaderWords ToWords(const PayloadHeader& h) {
  HeaderWords out;
  std::memcpy(out.w, &h, sizeof h);
  return out;
}

// Zeroes n 16-byte words at p.
__device__ void ZeroRegion(uint4* p, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = make_uint4(0, 0, 0, 0);
  }
}

__global__ void EncodePrologueKernel(HeaderWords h, uint32_t* payload, uint4* zero, size_t n16) {
  if (blockIdx.x == 0 && threadIdx.x < 8) payload[threadIdx.x] = h.w[threadIdx.x];
  ZeroRegion(zero, n16);
}

// Header words: 0 magic, 1 version|codec|dtype|flags, 2..5 L H S D, 6 reserved, 7 body bytes.
__global__ void DecodePrologueKernel(const uint32_t* payload, HeaderWords want,
                                     uint32_t allowed_flags, uint32_t* status, uint4* zero,
                                     size_t n16, uint8_t* keep_mask, int64_t tokens) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    uint32_t err = 0;
    for (int i = 0; i < 8; ++i) {
      uint32_t got = payload[i], exp = want.w[i];
      if (i == 1) {  // the flags byte is checked on its own
        if ((got >> 24) & ~allowed_flags) err |= kErrFlags;
        got &= 0x00FFFFFFu;
        exp &= 0x00FFFFFFu;
      }
      if (got != exp) err |= kErrHeader;
    }
    *status = err;
  }
  ZeroRegion(zero, n16);
  if (keep_mask != nullptr) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < tokens;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      keep_mask[i] = 1;
    }
  }
}

unsigned PrologueBlocks(size_t n16, int64_t tokens) {
  const int64_t items = std::max<int64_t>(static_cast<int64_t>(n16), tokens);
  return std::min<unsigned>(kPrologueMaxBlocks,
                            std::max<unsigned>(1, BlocksFor(items, kPrologueThreads)));
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

absl::Status CanEncodeCommon(absl::string_view codec, const KvGeometry& g, uint64_t body_bytes) {
  if (absl::Status s = ValidateGeometry(g); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(codec, " (cuda): ", s.message()));
  }
  if (g.head_dim % kVec != 0 || g.head_dim > 256) {
    return absl::UnimplementedError(absl::StrCat(codec, " (cuda): head_dim ", g.head_dim,
                                                 " is not a multiple of 8 in [8, 256]"));
  }
  if (body_bytes > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(codec, " (cuda): payload of ", body_bytes,
                                                   " bytes exceeds 4 GiB; encode smaller chunks"));
  }
  return absl::OkStatus();
}

absl::Status CheckEncodeArgs(const CudaCodec& c, const DeviceKv& kv, DeviceBytes payload,
                             DeviceBytes workspace) {
  const KvGeometry& g = kv.geom;
  if (absl::Status s = c.can_encode(g); !s.ok()) return s;
  if (kv.k == nullptr || kv.v == nullptr || payload.data == nullptr ||
      workspace.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(c.name, " (cuda): null buffer"));
  }
  if (!Aligned16(kv.k) || !Aligned16(kv.v) || !Aligned16(payload.data) ||
      !Aligned16(workspace.data)) {
    return absl::InvalidArgumentError(
        absl::StrCat(c.name, " (cuda): K, V, payload and workspace must be 16-byte aligned"));
  }
  if (payload.size < c.encoded_bytes(g)) {
    return absl::InvalidArgumentError(absl::StrCat(c.name, " (cuda): payload buffer holds ",
                                                   payload.size, " bytes, needs ",
                                                   c.encoded_bytes(g)));
  }
  if (workspace.size < c.workspace_bytes(g)) {
    return absl::InvalidArgumentError(absl::StrCat(c.name, " (cuda): workspace holds ",
                                                   workspace.size, " bytes, needs ",
                                                   c.workspace_bytes(g)));
  }
  return absl::OkStatus();
}

absl::Status CheckDecodeArgs(const CudaCodec& c, ConstDeviceBytes payload,
                             const MutableDeviceKv& out, DeviceBytes workspace) {
  const KvGeometry& g = out.geom;
  if (absl::Status s = c.can_encode(g); !s.ok()) return s;
  if (out.k == nullptr || out.v == nullptr || payload.data == nullptr ||
      workspace.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(c.name, " (cuda): null buffer"));
  }
  if (!Aligned16(out.k) || !Aligned16(out.v) || !Aligned16(payload.data) ||
      !Aligned16(workspace.data)) {
    return absl::InvalidArgumentError(
        absl::StrCat(c.name, " (cuda): K, V, payload and workspace must be 16-byte aligned"));
  }
  if (payload.size != c.encoded_bytes(g)) {
    return absl::InvalidArgumentError(absl::StrCat(c.name, " (cuda): payload of ", payload.size,
                                                   " bytes, geometry ", g.ToString(), " gives ",
                                                   c.encoded_bytes(g)));
  }
  if (workspace.size < c.workspace_bytes(g)) {
    return absl::InvalidArgumentError(absl::StrCat(c.name, " (cuda): workspace holds ",
                                                   workspace.size, " bytes, needs ",
                                                   c.workspace_bytes(g)));
  }
  return absl::OkStatus();
}

PayloadHeader MakeHeader(CodecId id, const KvGeometry& g, uint8_t flags, uint64_t body_bytes) {
  PayloadHeader h{};
  h.magic = kPayloadMagic;
  h.version = kPayloadVersion;
  h.codec = static_cast<uint8_t>(id);
  h.dtype = static_cast<uint8_t>(DType::kF16);
  h.flags = flags;
  h.layers = static_cast<uint32_t>(g.layers);
  h.heads = static_cast<uint32_t>(g.heads);
  h.tokens = static_cast<uint32_t>(g.tokens);
  h.head_dim = static_cast<uint32_t>(g.head_dim);
  h.body_bytes = static_cast<uint32_t>(body_bytes);
  return h;
}

absl::Status LaunchEncodePrologue(const PayloadHeader& h, uint8_t* payload, uint8_t* zero,
                                  size_t zero_bytes, cudaStream_t stream) {
  const size_t n16 = (zero_bytes + 15) / 16;  // regions are padded to 256 bytes
  EncodePrologueKernel<<<PrologueBlocks(n16, 0), kPrologueThreads, 0, stream>>>(
      ToWords(h), reinterpret_cast<uint32_t*>(payload), reinterpret_cast<uint4*>(zero), n16);
  return LaunchStatus("encode prologue");
}

absl::Status LaunchDecodePrologue(const uint8_t* payload, const PayloadHeader& expected,
                                  uint8_t allowed_flags, DeviceBytes workspace, uint8_t* zero,
                                  size_t zero_bytes, uint8_t* keep_mask, int64_t tokens,
                                  cudaStream_t stream) {
  const size_t n16 = (zero_bytes + 15) / 16;  // regions are padded to 256 bytes
  const int64_t mask_items = keep_mask != nullptr ? tokens : 0;
  DecodePrologueKernel<<<PrologueBlocks(n16, mask_items), kPrologueThreads, 0, stream>>>(
      reinterpret_cast<const uint32_t*>(payload), ToWords(expected), allowed_flags,
      reinterpret_cast<uint32_t*>(workspace.data), reinterpret_cast<uint4*>(zero), n16, keep_mask,
      mask_items);
  return LaunchStatus("decode prologue");
}

absl::Status LaunchStatus(absl::string_view what) {
  return CudaStatus(cudaGetLastError(), absl::StrCat("launch of ", what));
}

absl::Status DecodeStatus(DeviceBytes workspace, cudaStream_t stream) {
  if (workspace.data == nullptr || workspace.size < kStatusBytes) {
    return absl::InvalidArgumentError("DecodeStatus: not a CUDA codec workspace");
  }
  uint32_t bits = 0;
  KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&bits, workspace.data, sizeof bits,
                                           cudaMemcpyDeviceToHost, stream));
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  if (bits == 0) return absl::OkStatus();
  static constexpr struct {
    uint32_t bit;
    const char* what;
  } kWhat[] = {
      {kErrHeader, "header does not match the codec, geometry or body length"},
      {kErrFlags, "unknown header flags"},
      {kErrRecord, "cachegen record header does not match the geometry"},
      {kErrSections, "kvquant section lengths or channel counts do not match the geometry"},
      {kErrChannels, "kvquant channel lists are out of range, unsorted or overlapping"},
      {kErrPositions, "kept positions are not strictly ascending below S"},
  };
  std::string msg = "malformed payload (cuda decode):";
  for (const auto& w : kWhat) {
    if (bits & w.bit) absl::StrAppend(&msg, " ", w.what, ";");
  }
  return absl::InvalidArgumentError(msg);
}

}  // namespace kvs::cuda
