// services/transfer/frame.h — the data-plane wire format (ARCHITECTURE.md §3) and the session a
// receiver checks every frame against.
//
// Each chunk of a KV transfer travels as one frame: the fixed 128-byte little-endian FrameHeader
// below, then `payload_bytes` of codec payload (kernels/format/payload.h). A receiver reads the
// header, checks it (structure, header CRC, then every field against the negotiated Session)
// and only then reads the payload; a frame that fails is rejected with its payload unread, and
// the connection fails closed.
//
//   Session s = NegotiateSession({.session_id = id, .token = tok, .geom = g}, *codec).value();
//   FrameHeader h = MakeChunkHeader(s, /*chunk=*/3, payload_bytes, payload_crc);
//   SealFrameHeader(&h);                       // header CRC last
//   ...                                        // receiver:
//   KVS_RETURN_IF_ERROR(CheckFrameHeader(h));   // magic, version, header CRC, reserved bytes
//   KVS_RETURN_IF_ERROR(ValidateFrameHeader(h, s));  // session, token, plan, sizes
//   KVS_RETURN_IF_ERROR(VerifyPayloadCrc(h, payload));
//
// Versioning: kFrameVersion changes with any layout or meaning change; a receiver rejects any
// other version (the control plane negotiates the version before frames flow).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/tensor/kv.h"
#include "kernels/codec.h"

namespace kvs::transfer {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kvshuttle frames are little-endian");

inline constexpr uint32_t kFrameMagic = 0x4653564Bu;  // "KVSF" in memory order
inline constexpr uint8_t kFrameVersion = 1;

enum class FrameKind : uint8_t {
  kChunk = 1,  // sender -> receiver: one encoded chunk (a slab of layers)
  kDone = 2,   // receiver -> sender: every chunk decoded; payload = receiver timings (DonePayload)
  kAbort = 3,  // either way: the transfer failed; payload = status code + message (AbortPayload)
};

using SessionToken = std::array<uint8_t, 16>;

// The frame header, declared once. All multi-byte fields little-endian, naturally aligned.
struct FrameHeader {
  uint32_t magic;                // kFrameMagic
  uint8_t version;               // kFrameVersion
  uint8_t kind;                  // FrameKind
  uint8_t codec;                 // CodecId of the payload
  uint8_t dtype;                 // DType of the origin KV (fp16 / bf16)
  uint64_t session_id;           // from OpenSession
  uint8_t token[16];             // the session's random token: binds frames to the session
  uint64_t request_id;           // the request this KV belongs to
  uint32_t chunk_index;          // 0-based; == chunk_count for kDone
  uint32_t chunk_count;          // chunks in the transfer (the session's plan)
  uint32_t layer_begin;          // layer range [begin, end) the payload covers
  uint32_t layer_end;
  uint32_t token_begin;          // token range [begin, end) the payload covers
  uint32_t token_end;
  uint64_t codec_params_digest;  // CodecParamsDigest() of the encoder: codec options that change bytes
  uint64_t raw_bytes;            // K+V bytes of the range at 16 bits/element (before encoding)
  uint64_t payload_bytes;        // bytes following this header
  int64_t sender_ts_ns;          // sender's CLOCK_MONOTONIC when the frame was handed to the transport
  uint32_t payload_crc32c;       // CRC-32C of the payload
  uint32_t flags;                // reserved for future use; 0
  uint8_t reserved[20];          // 0
  uint32_t header_crc32c;        // CRC-32C of the 124 bytes before this field
};
static_assert(sizeof(FrameHeader) == 128, "frame header is 128 bytes on the wire");
static_assert(offsetof(FrameHeader, header_crc32c) == 124, "header CRC is the last field");
static_assert(std::is_trivially_copyable_v<FrameHeader>);

inline constexpr size_t kFrameHeaderBytes = sizeof(FrameHeader);

// One chunk of the plan: a slab of layers over a token range.
struct ChunkSpec {
  uint32_t layer_begin = 0, layer_end = 0;
  uint32_t token_begin = 0, token_end = 0;
  uint64_t raw_bytes = 0;          // 4 * layers * H * tokens * D
  uint64_t max_payload_bytes = 0;  // Codec::MaxEncodedBytes(chunk geometry)
  bool exact_payload = false;      // payload_bytes must equal max_payload_bytes
};

// What OpenSession negotiated; every frame is checked against it. Immutable once built.
struct Session {
  uint64_t session_id = 0;
  SessionToken token{};
  uint64_t request_id = 0;
  KvGeometry geom;
  DType dtype = DType::kF16;
  CodecId codec = CodecId::kIdentity;
  uint64_t codec_params_digest = 0;
  std::vector<ChunkSpec> chunks;  // the chunk plan, in index order

  uint64_t raw_bytes() const { return static_cast<uint64_t>(geom.raw_bytes()); }
  uint64_t max_payload_bytes() const;  // over the chunks
  // Largest control payload (kDone / kAbort) a peer may send for this session.
  uint64_t max_control_payload_bytes() const;
};

struct SessionParams {
  uint64_t session_id = 0;
  SessionToken token{};
  uint64_t request_id = 0;
  KvGeometry geom;
  DType dtype = DType::kF16;
  int64_t layers_per_chunk = 1;  // default: one layer per chunk (ARCHITECTURE.md §2)
  // Token splitting is carried by the header but not planned yet: 0 (= all tokens) only.
  int64_t tokens_per_chunk = 0;
};

// Builds the session (chunk plan with each chunk's payload bound) for `codec`.
absl::StatusOr<Session> NegotiateSession(const SessionParams& params, const Codec& codec);

// A fresh random token (getrandom(2)).
SessionToken RandomSessionToken();
// A random 64-bit id (getrandom(2)); never 0.
uint64_t RandomId();

// Digest of the codec options that change the payload bytes (id, fp8_compat, prune_fill).
uint64_t CodecParamsDigest(const Codec& codec);

// Header for chunk `index` of `s` (everything but sender_ts_ns and header_crc32c).
FrameHeader MakeChunkHeader(const Session& s, uint32_t index, uint64_t payload_bytes,
                            uint32_t payload_crc32c);
// Header for a control frame (kDone / kAbort) of `s`.
FrameHeader MakeControlHeader(const Session& s, FrameKind kind, absl::Span<const uint8_t> payload);

// Computes and stores header_crc32c (call after the last field change).
void SealFrameHeader(FrameHeader* h);

// Structure only: magic, version, header CRC, known kind, reserved bytes zero. Corruption =>
// DATA_LOSS; a foreign or newer peer => INVALID_ARGUMENT / FAILED_PRECONDITION.
absl::Status CheckFrameHeader(const FrameHeader& h);

// Every field against the session: id and token (UNAUTHENTICATED), request, codec, digest and
// dtype (INVALID_ARGUMENT), chunk index and ranges against the plan, raw bytes, payload bytes
// against the chunk's bound (OUT_OF_RANGE). Does not look at the payload.
absl::Status ValidateFrameHeader(const FrameHeader& h, const Session& s);

// CRC-32C of the payload against the header (DATA_LOSS on mismatch or length mismatch).
absl::Status VerifyPayloadCrc(const FrameHeader& h, absl::Span<const uint8_t> payload);
// The same for a payload in several parts (their concatenation).
absl::Status VerifyPayloadCrc(const FrameHeader& h, absl::Span<const absl::Span<const uint8_t>> parts);

// Where a transport may put a frame's payload instead of a receive buffer: up to
// kMaxPayloadParts spans whose sizes add up to the payload (e.g. an identity chunk straight into
// the destination KV's K and V layer slabs).
inline constexpr int kMaxPayloadParts = 4;
struct PayloadPlacement {
  std::array<absl::Span<uint8_t>, kMaxPayloadParts> parts{};
  int count = 0;
  uint64_t bytes() const {
    uint64_t n = 0;
    for (int i = 0; i < count; ++i) n += parts[i].size();
    return n;
  }
};
// Called by a transport after a header passed the checks; true = read the payload into `out`.
using PayloadPlacer = std::function<bool(const FrameHeader&, PayloadPlacement* out)>;

// The sessions a connection accepts frames for, keyed by session id; thread-safe. A transport
// calls Check() on every header before reading its payload (OpenSession registers, CloseSession
// unregisters), then Place() to learn whether the payload goes straight to its destination.
class FrameGate {
 public:
  void Register(std::shared_ptr<const Session> s);
  void Unregister(uint64_t session_id);  // also drops the session's placer
  // CheckFrameHeader + ValidateFrameHeader against the registered session (unknown session id
  // => UNAUTHENTICATED).
  absl::Status Check(const FrameHeader& h) const;
  // Payloads of `session_id`'s chunks go where `placer` says (the receiver's in-place path).
  void SetPlacer(uint64_t session_id, PayloadPlacer placer);
  // True once `session_id`'s receiver has installed its placer (frames that arrive earlier land
  // in receive buffers).
  bool HasPlacerForTest(uint64_t session_id) const;
  // Only for headers Check() accepted.
  bool Place(const FrameHeader& h, PayloadPlacement* out) const;

 private:
  mutable std::mutex mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<const Session>> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::shared_ptr<PayloadPlacer>> placers_ ABSL_GUARDED_BY(mu_);
};

// ---- control payloads -------------------------------------------------------------------------

// Receiver-side timestamps of one chunk (CLOCK_MONOTONIC ns), carried back in kDone.
struct RxChunkTiming {
  uint32_t chunk;
  uint32_t reserved;
  int64_t recv_begin_ns;    // header arrived
  int64_t recv_end_ns;      // payload fully in the receive buffer
  int64_t decode_begin_ns;  // decode stage took it (CRC check + decode)
  int64_t decode_end_ns;    // decoded in place into the destination KV
};
static_assert(sizeof(RxChunkTiming) == 40, "RxChunkTiming is 40 bytes on the wire");

// kDone payload: u32 count, u32 reserved, then count RxChunkTiming.
std::vector<uint8_t> EncodeDonePayload(absl::Span<const RxChunkTiming> timings);
absl::StatusOr<std::vector<RxChunkTiming>> DecodeDonePayload(absl::Span<const uint8_t> payload,
                                                             uint32_t expected_count);
inline uint64_t DonePayloadBytes(uint64_t chunks) { return 8 + sizeof(RxChunkTiming) * chunks; }

// kAbort payload: u32 absl::StatusCode, u32 message length, message (at most 1024 bytes).
inline constexpr size_t kMaxAbortMessage = 1024;
std::vector<uint8_t> EncodeAbortPayload(const absl::Status& s);
absl::Status DecodeAbortPayload(absl::Span<const uint8_t> payload);  // the peer's status (non-OK)

}  // namespace kvs::transfer
