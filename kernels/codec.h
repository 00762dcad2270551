// kernels/codec.h — the host API of kvshuttle's KV-cache codecs.
//
// A codec turns one request's (or one layer chunk's) K and V, each [L, H, S, D] fp16, into a
// binary self-describing payload and back. The API follows the CUTLASS/CUB shape:
// arguments -> CanEncode -> exact (or bounded) encoded size -> Encode/Decode into caller-owned
// buffers, with the caller's thread pool. Codecs never allocate on the hot path except where the
// codec's header says so (palu's SVD), and never pick threads of their own.
//
//   kvs::CodecRegistry registry = kvs::CodecRegistry::Builtin();
//   KVS_ASSIGN_OR_RETURN(std::unique_ptr<kvs::Codec> codec, registry.Create("uniform_int8"));
//   KVS_ASSIGN_OR_RETURN(size_t cap, codec->MaxEncodedBytes(kv.geom()));
//   std::vector<uint8_t> payload(cap), ws(codec->WorkspaceBytes(kv.geom(), &pool));
//   KVS_ASSIGN_OR_RETURN(size_t n, codec->Encode(kv, absl::MakeSpan(payload), absl::MakeSpan(ws), &pool));
//   KVS_RETURN_IF_ERROR(codec->Decode(absl::MakeConstSpan(payload.data(), n), out, absl::MakeSpan(ws), &pool));
//
// Streaming mode: encoding a chunk of layers is encoding the view kv.Layers(l0, l1); statistics
// that span the tensor (per-layer scales, kvquant's outlier channels, top-k token scores) are then
// computed per chunk. Whole mode encodes the full view once. The payload records which geometry
// it covers, so a decoder checks it against what it expects before touching the body.
//
// Thread-safety: a Codec is immutable after creation; Encode/Decode may run concurrently on
// distinct buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/tensor/kv.h"
#include "common/thread_pool/thread_pool.h"

namespace kvs {

// Stable wire ids (they appear in payload and frame headers): never renumber.
enum class CodecId : uint8_t {
  kIdentity = 1,
  kLosslessZstd = 2,
  kLosslessLz4 = 3,
  kFp8E4m3 = 4,
  kUniformInt8 = 5,
  kUniformInt4 = 6,
  kKivi2Bit = 7,
  kKvquant2Bit = 8,
  kCachegen = 9,
  kPaluLr = 10,
  kTopkPrune50 = 11,
  kCascadePrune50Int4 = 12,
  kPaluInt4 = 13,
  kMixedK8V4 = 14,
};

// Which implementation runs: the scalar reference (the oracle; obviously correct, slow) or the
// fast path (blocked, vectorisable, multi-threaded). Both read and write the same payload format.
enum class CodecPath : uint8_t { kReference = 0, kFast = 1 };

// What pruning codecs tell the decode side about pruned token positions.
enum class PruneFill : uint8_t {
  kMask = 0,  // kvshuttle default: pruned positions are reported in keep_mask and masked out
  kZero = 1,  // KVShuttle reference: pruned positions are zeros and attention still sees them
};

struct CodecOptions {
  CodecPath path = CodecPath::kFast;
  // fp8_e4m3 only: reproduce the KVShuttle reference CPU path (offset-uint8, step amax/240,
  // clipped at about 0.53 amax) instead of real E4M3.
  bool fp8_compat = false;
  // topk_prune_50 / cascade_prune50_int4 only.
  PruneFill prune_fill = PruneFill::kMask;
};

struct CodecInfo {
  CodecId id;
  absl::string_view name;         // registry name, as in the KVShuttle paper
  absl::string_view family;       // baseline, lossless, quantization, structured, low-rank, pruning, hybrid
  absl::string_view description;  // one line
  bool lossy;
  bool exact_size;  // MaxEncodedBytes is the exact payload size (all but the lossless codecs)
  bool prunes;      // decode may report evicted token positions in keep_mask
};

class Codec {
 public:
  virtual ~Codec() = default;

  virtual const CodecInfo& info() const = 0;
  const CodecOptions& options() const { return options_; }
  absl::string_view name() const { return info().name; }

  // OK when this codec can encode a cache of geometry g (valid geometry, sizes in range).
  virtual absl::Status CanEncode(const KvGeometry& g) const;

  // Payload size for geometry g: exact when info().exact_size, else an upper bound.
  virtual absl::StatusOr<size_t> MaxEncodedBytes(const KvGeometry& g) const = 0;

  // Scratch bytes Encode and Decode need for geometry g when run on `pool` (null: one thread).
  virtual size_t WorkspaceBytes(const KvGeometry& g, const ThreadPool* pool) const;

  // Encodes kv (fp16) into out[0, n) and returns n. `out` must hold MaxEncodedBytes(geom);
  // `workspace` must hold WorkspaceBytes(geom, pool).
  virtual absl::StatusOr<size_t> Encode(const KvCacheView& kv, absl::Span<uint8_t> out,
                                        absl::Span<uint8_t> workspace, ThreadPool* pool) const = 0;

  // Decodes `payload` into out (fp16). The payload's geometry must equal out's geometry.
  // keep_mask, when non-empty, must have out.geom().tokens entries: it is set to 1 for every
  // token position that carries data and 0 for positions a pruning codec evicted (only in
  // PruneFill::kMask; evicted positions are zero-filled in out either way).
  // A malformed, truncated or mismatched payload is an error; out is then unspecified.
  virtual absl::Status Decode(absl::Span<const uint8_t> payload, const MutableKvCacheView& out,
                              absl::Span<uint8_t> workspace, ThreadPool* pool,
                              absl::Span<uint8_t> keep_mask = {}) const = 0;

 protected:
  explicit Codec(const CodecOptions& options) : options_(options) {}

 private:
  CodecOptions options_;
};

// Convenience wrappers that size and allocate the buffers (tests, CLIs, benchmarks).
absl::StatusOr<std::vector<uint8_t>> EncodeToVector(const Codec& codec, const KvCacheView& kv,
                                                    ThreadPool* pool);
absl::Status DecodeFromVector(const Codec& codec, absl::Span<const uint8_t> payload,
                              const MutableKvCacheView& out, ThreadPool* pool,
                              absl::Span<uint8_t> keep_mask = {});

// Reads the geometry and codec id a payload declares (header only; no body validation).
struct PayloadSummary {
  CodecId codec;
  KvGeometry geom;
  DType dtype;
  uint8_t flags;
  uint64_t body_bytes;
};
absl::StatusOr<PayloadSummary> InspectPayload(absl::Span<const uint8_t> payload);

// The set of codecs, by name. Builtin() registers kvshuttle's 14; an instance is a plain value
// (no process-wide singleton), so tests and daemons can hold their own.
class CodecRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Codec>(const CodecOptions&)>;

  static CodecRegistry Builtin();

  void Register(std::string name, Factory factory);
  // Unknown name => NotFound listing the available names.
  absl::StatusOr<std::unique_ptr<Codec>> Create(absl::string_view name,
                                                const CodecOptions& options = {}) const;
  absl::StatusOr<std::unique_ptr<Codec>> Create(CodecId id, const CodecOptions& options = {}) const;
  // Sorted names.
  std::vector<std::string> Names() const;

 private:
  std::vector<std::pair<std::string, Factory>> entries_;  // kept sorted by name
};

}  // namespace kvs
