#include "absl/strings/string_view.h"
#include "kernels/codec.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status.h"
#include "kernels/format/payload.h"

namespace kvs {

absl::Status Codec::CanEncode(const KvGeometry& g) const { return ValidateGeometry(g); }

size_t Codec::WorkspaceBytes(const KvGeometry&, const ThreadPool*) const { return 0; }

absl::StatusOr<std::vector<uint8_t>> EncodeToVector(const Codec& codec, const KvCacheView& kv,
                                                    ThreadPool* pool) {
  KVS_ASSIGN_OR_RETURN(size_t cap, codec.MaxEncodedBytes(kv.geom()));
  std::vector<uint8_t> out(cap);
  std::vector<uint8_t> ws(codec.WorkspaceBytes(kv.geom(), pool));
  KVS_ASSIGN_OR_RETURN(size_t n, codec.Encode(kv, absl::MakeSpan(out), absl::MakeSpan(ws), pool));
  out.resize(n);
  return out;
}

absl::Status DecodeFromVector(const Codec& codec, absl::Span<const uint8_t> payload,
                              const MutableKvCacheView& out, ThreadPool* pool,
                              absl::Span<uint8_t> keep_mask) {
  std::vector<uint8_t> ws(codec.WorkspaceBytes(out.geom(), pool));
  return codec.Decode(payload, out, absl::MakeSpan(ws), pool, keep_mask);
}

absl::StatusOr<PayloadSummary> InspectPayload(absl::Span<const uint8_t> payload) {
  if (payload.size() < kPayloadHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("payload of ", payload.size(),
                                                   " bytes is shorter than its 32-byte header"));
  }
  PayloadHeader h;
  std::memcpy(&h, payload.data(), sizeof h);
  if (h.magic != kPayloadMagic) return absl::InvalidArgumentError("payload: bad magic");
  if (h.version != kPayloadVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload: format version ", int{h.version}, ", this build reads ",
                     int{kPayloadVersion}));
  }
  if (h.codec < static_cast<uint8_t>(CodecId::kIdentity) ||
      h.codec > static_cast<uint8_t>(CodecId::kMixedK8V4)) {
    return absl::InvalidArgumentError(absl::StrCat("payload: unknown codec id ", int{h.codec}));
  }
  if (h.dtype != static_cast<uint8_t>(DType::kF16) && h.dtype != static_cast<uint8_t>(DType::kBF16)) {
    return absl::InvalidArgumentError(absl::StrCat("payload: unknown dtype ", int{h.dtype}));
  }
  if (h.reserved != 0) return absl::InvalidArgumentError("payload: reserved field is not zero");
  PayloadSummary s;
  s.codec = static_cast<CodecId>(h.codec);
  s.geom = {h.layers, h.heads, h.tokens, h.head_dim};
  s.dtype = static_cast<DType>(h.dtype);
  s.flags = h.flags;
  s.body_bytes = h.body_bytes;
  KVS_RETURN_IF_ERROR(Annotate(ValidateGeometry(s.geom), "payload"));
  if (s.body_bytes != payload.size() - kPayloadHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("payload: header says ", s.body_bytes,
                                                   " body bytes, ",
                                                   payload.size() - kPayloadHeaderBytes, " present"));
  }
  return s;
}

void CodecRegistry::Register(std::string name, Factory factory) {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const auto& e, const std::string& n) { return e.first < n; });
  if (it != entries_.end() && it->first == name) {
    it->second = std::move(factory);
  } else {
    entries_.insert(it, {std::move(name), std::move(factory)});
  }
}

absl::StatusOr<std::unique_ptr<Codec>> CodecRegistry::Create(absl::string_view name,
                                                             const CodecOptions& options) const {
  for (const auto& [n, factory] : entries_) {
    if (n != name) continue;
    std::unique_ptr<Codec> codec = factory(options);
    if (!codec) return absl::UnimplementedError(absl::StrCat("codec '", name, "' is not built"));
    return codec;
  }
  return absl::NotFoundError(absl::StrCat("unknown codec '", name,
                                          "'; available: ", absl::StrJoin(Names(), ", ")));
}

absl::StatusOr<std::unique_ptr<Codec>> CodecRegistry::Create(CodecId id,
                                                             const CodecOptions& options) const {
  for (const auto& entry : entries_) {
    std::unique_ptr<Codec> c = entry.second(options);
    if (c && c->info().id == id) return c;
  }
  return absl::NotFoundError(absl::StrCat("unknown codec id ", static_cast<int>(id)));
}

std::vector<std::string> CodecRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& e : entries_) names.push_back(e.first);
  return names;
}

}  // namespace kvs
