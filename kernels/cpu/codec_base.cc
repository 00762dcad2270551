#include "kernels/cpu/codec_base.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status/status.h"

namespace kvs {

absl::Status CodecBase::CanEncode(const KvGeometry& g) const {
  return Annotate(ValidateGeometry(g), info_.name);
}

absl::StatusOr<size_t> CodecBase::MaxEncodedBytes(const KvGeometry& g) const {
  KVS_RETURN_IF_ERROR(CanEncode(g));
  KVS_ASSIGN_OR_RETURN(size_t body, MaxBodyBytes(g));
  if (body > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        info_.name, ": payload of ", body, " bytes exceeds 4 GiB; encode smaller layer chunks"));
  }
  return kPayloadHeaderBytes + body;
}

absl::StatusOr<size_t> CodecBase::Encode(const KvCacheView& kv, absl::Span<uint8_t> out,
                                         absl::Span<uint8_t> workspace, ThreadPool* pool) const {
  KVS_RETURN_IF_ERROR(ValidateKv(kv));
  if (kv.k.dtype != DType::kF16 && !AcceptsBf16()) {
    return absl::InvalidArgumentError(
        absl::StrCat(info_.name, ": input must be fp16, got ", DTypeName(kv.k.dtype)));
  }
  const KvGeometry& g = kv.geom();
  KVS_ASSIGN_OR_RETURN(size_t need, MaxEncodedBytes(g));
  if (out.size() < need) {
    return absl::InvalidArgumentError(absl::StrCat(info_.name, ": output buffer holds ",
                                                   out.size(), " bytes, needs ", need));
  }
  const size_t ws_need = WorkspaceBytes(g, pool);
  if (workspace.size() < ws_need) {
    return absl::InvalidArgumentError(absl::StrCat(info_.name, ": workspace holds ",
                                                   workspace.size(), " bytes, needs ", ws_need));
  }
  KVS_ASSIGN_OR_RETURN(size_t body,
                       EncodeBody(kv, out.subspan(kPayloadHeaderBytes), workspace, pool));
  if (info_.exact_size && body != need - kPayloadHeaderBytes) {
    return absl::InternalError(absl::StrCat(info_.name, ": wrote ", body,
                                            " body bytes, closed form says ",
                                            need - kPayloadHeaderBytes));
  }
  PayloadHeader h{};
  h.magic = kPayloadMagic;
  h.version = kPayloadVersion;
  h.codec = static_cast<uint8_t>(info_.id);
  h.dtype = static_cast<uint8_t>(kv.k.dtype);
  h.flags = EncodeFlags();
  h.layers = static_cast<uint32_t>(g.layers);
  h.heads = static_cast<uint32_t>(g.heads);
  h.tokens = static_cast<uint32_t>(g.tokens);
  h.head_dim = static_cast<uint32_t>(g.head_dim);
  h.body_bytes = static_cast<uint32_t>(body);
  std::memcpy(out.data(), &h, sizeof h);
  return kPayloadHeaderBytes + body;
}

absl::Status CodecBase::Decode(absl::Span<const uint8_t> payload, const MutableKvCacheView& out,
                               absl::Span<uint8_t> workspace, ThreadPool* pool,
                               absl::Span<uint8_t> keep_mask) const {
  KVS_RETURN_IF_ERROR(ValidateKv(out));
  KVS_ASSIGN_OR_RETURN(PayloadSummary s, InspectPayload(payload));
  const KvGeometry& g = out.geom();
  if (s.codec != info_.id) {
    return absl::InvalidArgumentError(absl::StrCat(info_.name, ": payload was encoded by codec id ",
                                                   static_cast<int>(s.codec)));
  }
  if (s.geom != g) {
    return absl::InvalidArgumentError(absl::StrCat(info_.name, ": payload geometry ",
                                                   s.geom.ToString(), " differs from expected ",
                                                   g.ToString()));
  }
  if (s.dtype != out.k.dtype) {
    return absl::InvalidArgumentError(absl::StrCat(info_.name, ": payload dtype ",
                                                   DTypeName(s.dtype), " differs from output ",
                                                   DTypeName(out.k.dtype)));
  }
  KVS_ASSIGN_OR_RETURN(size_t body_max, MaxBodyBytes(g));
  if (info_.exact_size ? s.body_bytes != body_max : s.body_bytes > body_max) {
    return absl::InvalidArgumentError(absl::StrCat(info_.name, ": payload body of ", s.body_bytes,
                                                   " bytes, geometry allows ", body_max));
  }
  if (!keep_mask.empty()) {
    if (static_cast<int64_t>(keep_mask.size()) != g.tokens) {
      return absl::InvalidArgumentError(absl::StrCat(info_.name, ": keep_mask has ",
                                                     keep_mask.size(), " entries, S is ", g.tokens));
    }
    std::fill(keep_mask.begin(), keep_mask.end(), uint8_t{1});
  }
  const size_t ws_need = WorkspaceBytes(g, pool);
  if (workspace.size() < ws_need) {
    return absl::InvalidArgumentError(absl::StrCat(info_.name, ": workspace holds ",
                                                   workspace.size(), " bytes, needs ", ws_need));
  }
  return DecodeBody(payload.subspan(kPayloadHeaderBytes, s.body_bytes), s.flags, out, workspace,
                    pool, keep_mask);
}

}  // namespace kvs
