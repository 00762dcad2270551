#include "services/transfer/frame.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status/status.h"
#include "services/transfer/crc32c.h"

namespace kvs::transfer {
namespace {

void FillRandom(void* out, size_t n) {
  auto* p = static_cast<uint8_t*>(out);
  while (n > 0) {
    const ssize_t got = getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      // getrandom cannot fail on Linux >= 3.17 once the pool is initialised; there is no sane
      // fallback for a security token, so stop rather than hand out a predictable one.
      std::abort();
    }
    p += got;
    n -= static_cast<size_t>(got);
  }
}

// Constant-time comparison (the token is a bearer secret).
bool TokenEquals(const uint8_t* a, const uint8_t* b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < sizeof(SessionToken); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

uint64_t Fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

FrameHeader BaseHeader(const Session& s, FrameKind kind) {
  FrameHeader h;
  std::memset(&h, 0, sizeof h);
  h.magic = kFrameMagic;
  h.version = kFrameVersion;
  h.kind = static_cast<uint8_t>(kind);
  h.codec = static_cast<uint8_t>(s.codec);
  h.dtype = static_cast<uint8_t>(s.dtype);
  h.session_id = s.session_id;
  std::memcpy(h.token, s.token.data(), sizeof h.token);
  h.request_id = s.request_id;
  h.chunk_count = static_cast<uint32_t>(s.chunks.size());
  return h;
}

}  // namespace

uint64_t Session::max_payload_bytes() const {
  uint64_t m = 0;
  for (const ChunkSpec& c : chunks) m = std::max(m, c.max_payload_bytes);
  return m;
}

uint64_t Session::max_control_payload_bytes() const {
  return std::max<uint64_t>(DonePayloadBytes(chunks.size()), 8 + kMaxAbortMessage);
}

SessionToken RandomSessionToken() {
  SessionToken t;
  FillRandom(t.data(), t.size());
  return t;
}

uint64_t RandomId() {
  uint64_t id = 0;
  while (id == 0) FillRandom(&id, sizeof id);
  return id;
}

uint64_t CodecParamsDigest(const Codec& codec) {
  uint64_t h = 0xcbf29ce484222325ull;
  const uint8_t fields[4] = {static_cast<uint8_t>(codec.info().id), kFrameVersion,
                             static_cast<uint8_t>(codec.options().fp8_compat),
                             static_cast<uint8_t>(codec.options().prune_fill)};
  h = Fnv1a(h, fields, sizeof fields);
  h = Fnv1a(h, codec.name().data(), codec.name().size());
  return h;
}

absl::StatusOr<Session> NegotiateSession(const SessionParams& p, const Codec& codec) {
  KVS_RETURN_IF_ERROR(Annotate(ValidateGeometry(p.geom), "session geometry"));
  KVS_RETURN_IF_ERROR(Annotate(codec.CanEncode(p.geom), "session codec"));
  if (p.dtype != DType::kF16 && p.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("session: unknown dtype");
  }
  if (p.layers_per_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("session: layers_per_chunk ", p.layers_per_chunk, " must be >= 1"));
  }
  if (p.tokens_per_chunk != 0 && p.tokens_per_chunk != p.geom.tokens) {
    return absl::UnimplementedError(
        "session: token-split chunks are not planned yet (tokens_per_chunk must be 0)");
  }
  Session s;
  s.session_id = p.session_id;
  s.token = p.token;
  s.request_id = p.request_id;
  s.geom = p.geom;
  s.dtype = p.dtype;
  s.codec = codec.info().id;
  s.codec_params_digest = CodecParamsDigest(codec);
  for (int64_t l0 = 0; l0 < p.geom.layers; l0 += p.layers_per_chunk) {
    const int64_t l1 = std::min(p.geom.layers, l0 + p.layers_per_chunk);
    const KvGeometry cg = p.geom.WithLayers(l1 - l0);
    ChunkSpec c;
    c.layer_begin = static_cast<uint32_t>(l0);
    c.layer_end = static_cast<uint32_t>(l1);
    c.token_begin = 0;
    c.token_end = static_cast<uint32_t>(p.geom.tokens);
    c.raw_bytes = static_cast<uint64_t>(cg.raw_bytes());
    KVS_ASSIGN_OR_RETURN(size_t bound, codec.MaxEncodedBytes(cg));
    c.max_payload_bytes = bound;
    c.exact_payload = codec.info().exact_size;
    s.chunks.push_back(c);
  }
  return s;
}

FrameHeader MakeChunkHeader(const Session& s, uint32_t index, uint64_t payload_bytes,
                            uint32_t payload_crc32c) {
  FrameHeader h = BaseHeader(s, FrameKind::kChunk);
  const ChunkSpec& c = s.chunks.at(index);
  h.chunk_index = index;
  h.layer_begin = c.layer_begin;
  h.layer_end = c.layer_end;
  h.token_begin = c.token_begin;
  h.token_end = c.token_end;
  h.codec_params_digest = s.codec_params_digest;
  h.raw_bytes = c.raw_bytes;
  h.payload_bytes = payload_bytes;
  h.payload_crc32c = payload_crc32c;
  return h;
}

FrameHeader MakeControlHeader(const Session& s, FrameKind kind, absl::Span<const uint8_t> payload) {
  FrameHeader h = BaseHeader(s, kind);
  h.chunk_index = static_cast<uint32_t>(s.chunks.size());
  h.layer_begin = 0;
  h.layer_end = static_cast<uint32_t>(s.geom.layers);
  h.token_begin = 0;
  h.token_end = static_cast<uint32_t>(s.geom.tokens);
  h.codec_params_digest = s.codec_params_digest;
  h.raw_bytes = s.raw_bytes();
  h.payload_bytes = payload.size();
  h.payload_crc32c = Crc32c(payload.data(), payload.size());
  return h;
}

void SealFrameHeader(FrameHeader* h) {
  h->header_crc32c = Crc32c(h, offsetof(FrameHeader, header_crc32c));
}

absl::Status CheckFrameHeader(const FrameHeader& h) {
  if (h.magic != kFrameMagic) {
    return absl::InvalidArgumentError(absl::StrCat("frame: bad magic 0x", absl::Hex(h.magic)));
  }
  if (h.header_crc32c != Crc32c(&h, offsetof(FrameHeader, header_crc32c))) {
    return absl::DataLossError("frame: header crc mismatch");
  }
  if (h.version != kFrameVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "frame: format version ", int{h.version}, ", this build speaks ", int{kFrameVersion}));
  }
  if (h.kind < static_cast<uint8_t>(FrameKind::kChunk) ||
      h.kind > static_cast<uint8_t>(FrameKind::kAbort)) {
    return absl::InvalidArgumentError(absl::StrCat("frame: unknown kind ", int{h.kind}));
  }
  if (h.flags != 0) return absl::InvalidArgumentError("frame: unknown flags");
  for (uint8_t b : h.reserved) {
    if (b != 0) return absl::InvalidArgumentError("frame: reserved bytes are not zero");
  }
  return absl::OkStatus();
}

absl::Status ValidateFrameHeader(const FrameHeader& h, const Session& s) {
  if (h.session_id != s.session_id || !TokenEquals(h.token, s.token.data())) {
    // One message for both: do not tell a prober which part was wrong.
    return absl::UnauthenticatedError(
        absl::StrCat("frame: session id or token does not match session ", s.session_id));
  }
  if (h.request_id != s.request_id) {
    return absl::InvalidArgumentError(absl::StrCat("frame: request ", h.request_id,
                                                   ", session carries request ", s.request_id));
  }
  if (h.codec != static_cast<uint8_t>(s.codec) || h.codec_params_digest != s.codec_params_digest) {
    return absl::InvalidArgumentError(absl::StrCat("frame: codec ", int{h.codec}, " digest ",
                                                   absl::Hex(h.codec_params_digest),
                                                   " differs from the negotiated codec ",
                                                   static_cast<int>(s.codec)));
  }
  if (h.dtype != static_cast<uint8_t>(s.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("frame: dtype ", int{h.dtype},
                                                   " differs from the negotiated dtype"));
  }
  if (h.chunk_count != s.chunks.size()) {
    return absl::OutOfRangeError(absl::StrCat("frame: chunk count ", h.chunk_count,
                                              ", the plan has ", s.chunks.size()));
  }
  const auto kind = static_cast<FrameKind>(h.kind);
  if (kind == FrameKind::kChunk) {
    if (h.chunk_index >= s.chunks.size()) {
      return absl::OutOfRangeError(absl::StrCat("frame: chunk index ", h.chunk_index,
                                                " beyond the plan's ", s.chunks.size()));
    }
    const ChunkSpec& c = s.chunks[h.chunk_index];
    if (h.layer_begin != c.layer_begin || h.layer_end != c.layer_end ||
        h.token_begin != c.token_begin || h.token_end != c.token_end) {
      return absl::OutOfRangeError(absl::StrCat(
          "frame: chunk ", h.chunk_index, " covers layers [", h.layer_begin, ",", h.layer_end,
          ") tokens [", h.token_begin, ",", h.token_end, "), the plan says layers [",
          c.layer_begin, ",", c.layer_end, ") tokens [", c.token_begin, ",", c.token_end, ")"));
    }
    if (h.raw_bytes != c.raw_bytes) {
      return absl::OutOfRangeError(absl::StrCat("frame: chunk ", h.chunk_index, " raw bytes ",
                                                h.raw_bytes, ", the geometry gives ", c.raw_bytes));
    }
    if (h.payload_bytes > c.max_payload_bytes ||
        (c.exact_payload && h.payload_bytes != c.max_payload_bytes)) {
      return absl::OutOfRangeError(absl::StrCat(
          "frame: chunk ", h.chunk_index, " payload of ", h.payload_bytes, " bytes, the codec ",
          c.exact_payload ? "produces exactly " : "produces at most ", c.max_payload_bytes));
    }
    return absl::OkStatus();
  }
  // Control frames cover the whole transfer.
  if (h.chunk_index != s.chunks.size() || h.layer_begin != 0 ||
      h.layer_end != static_cast<uint64_t>(s.geom.layers) || h.token_begin != 0 ||
      h.token_end != static_cast<uint64_t>(s.geom.tokens) || h.raw_bytes != s.raw_bytes()) {
    return absl::OutOfRangeError("frame: control frame ranges differ from the session");
  }
  if (kind == FrameKind::kDone && h.payload_bytes != DonePayloadBytes(s.chunks.size())) {
    return absl::OutOfRangeError(absl::StrCat("frame: done payload of ", h.payload_bytes,
                                              " bytes, expected ",
                                              DonePayloadBytes(s.chunks.size())));
  }
  if (kind == FrameKind::kAbort && (h.payload_bytes < 8 || h.payload_bytes > 8 + kMaxAbortMessage)) {
    return absl::OutOfRangeError(
        absl::StrCat("frame: abort payload of ", h.payload_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status VerifyPayloadCrc(const FrameHeader& h, absl::Span<const uint8_t> payload) {
  if (payload.size() != h.payload_bytes) {
    return absl::DataLossError(absl::StrCat("frame: ", payload.size(), " payload bytes, header says ",
                                            h.payload_bytes));
  }
  const uint32_t crc = Crc32c(payload.data(), payload.size());
  if (crc != h.payload_crc32c) {
    return absl::DataLossError(absl::StrCat("frame: chunk ", h.chunk_index,
                                            " payload crc32c mismatch (header 0x",
                                            absl::Hex(h.payload_crc32c), ", payload 0x",
                                            absl::Hex(crc), ")"));
  }
  return absl::OkStatus();
}

absl::Status VerifyPayloadCrc(const FrameHeader& h, absl::Span<const absl::Span<const uint8_t>> parts) {
  uint64_t n = 0;
  uint32_t crc = 0;
  for (absl::Span<const uint8_t> p : parts) {
    n += p.size();
    crc = Crc32cExtend(crc, p.data(), p.size());
  }
  if (n != h.payload_bytes) {
    return absl::DataLossError(absl::StrCat("frame: ", n, " payload bytes, header says ", h.payload_bytes));
  }
  if (crc != h.payload_crc32c) {
    return absl::DataLossError(absl::StrCat("frame: chunk ", h.chunk_index,
                                            " payload crc32c mismatch (header 0x",
                                            absl::Hex(h.payload_crc32c), ", payload 0x",
                                            absl::Hex(crc), ")"));
  }
  return absl::OkStatus();
}

void FrameGate::Register(std::shared_ptr<const Session> s) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t id = s->session_id;
  sessions_[id] = std::move(s);
}

void FrameGate::Unregister(uint64_t session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.erase(session_id);
  placers_.erase(session_id);
}

void FrameGate::SetPlacer(uint64_t session_id, PayloadPlacer placer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (placer) {
    placers_[session_id] = std::make_shared<PayloadPlacer>(std::move(placer));
  } else {
    placers_.erase(session_id);
  }
}

bool FrameGate::HasPlacerForTest(uint64_t session_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return placers_.contains(session_id);
}

bool FrameGate::Place(const FrameHeader& h, PayloadPlacement* out) const {
  std::shared_ptr<PayloadPlacer> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = placers_.find(h.session_id);
    if (it == placers_.end()) return false;
    p = it->second;
  }
  return (*p)(h, out) && out->bytes() == h.payload_bytes;
}

absl::Status FrameGate::Check(const FrameHeader& h) const {
  KVS_RETURN_IF_ERROR(CheckFrameHeader(h));
  std::shared_ptr<const Session> s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(h.session_id);
    if (it != sessions_.end()) s = it->second;
  }
  if (!s) {
    return absl::UnauthenticatedError(
        absl::StrCat("frame: session ", h.session_id, " is not open on this connection"));
  }
  return ValidateFrameHeader(h, *s);
}

std::vector<uint8_t> EncodeDonePayload(absl::Span<const RxChunkTiming> timings) {
  std::vector<uint8_t> out(DonePayloadBytes(timings.size()));
  const uint32_t n = static_cast<uint32_t>(timings.size());
  std::memcpy(out.data(), &n, 4);
  if (!timings.empty()) std::memcpy(out.data() + 8, timings.data(), timings.size() * sizeof(RxChunkTiming));
  return out;
}

absl::StatusOr<std::vector<RxChunkTiming>> DecodeDonePayload(absl::Span<const uint8_t> payload,
                                                             uint32_t expected_count) {
  if (payload.size() != DonePayloadBytes(expected_count)) {
    return absl::DataLossError("done payload: wrong size");
  }
  uint32_t n;
  std::memcpy(&n, payload.data(), 4);
  if (n != expected_count) return absl::DataLossError("done payload: wrong chunk count");
  std::vector<RxChunkTiming> t(n);
  if (n) std::memcpy(t.data(), payload.data() + 8, n * sizeof(RxChunkTiming));
  return t;
}

std::vector<uint8_t> EncodeAbortPayload(const absl::Status& s) {
  const absl::string_view msg = s.message().substr(0, kMaxAbortMessage);
  std::vector<uint8_t> out(8 + msg.size());
  const uint32_t code = static_cast<uint32_t>(s.code());
  const uint32_t len = static_cast<uint32_t>(msg.size());
  std::memcpy(out.data(), &code, 4);
  std::memcpy(out.data() + 4, &len, 4);
  if (!msg.empty()) std::memcpy(out.data() + 8, msg.data(), msg.size());
  return out;
}

absl::Status DecodeAbortPayload(absl::Span<const uint8_t> payload) {
  if (payload.size() < 8) return absl::DataLossError("abort payload: truncated");
  uint32_t code, len;
  std::memcpy(&code, payload.data(), 4);
  std::memcpy(&len, payload.data() + 4, 4);
  if (len != payload.size() - 8) return absl::DataLossError("abort payload: wrong length");
  auto c = static_cast<absl::StatusCode>(code);
  if (code == 0 || code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
    c = absl::StatusCode::kUnknown;
  }
  return absl::Status(
      c, absl::StrCat("peer aborted: ",
                      absl::string_view(reinterpret_cast<const char*>(payload.data() + 8), len)));
}

}  // namespace kvs::transfer
