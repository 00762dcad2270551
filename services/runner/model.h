// services/runner/model.h — a Llama-family decoder (libtorch inside, no torch in this header).
//
// The architecture (ARCHITECTURE.md §6): token embedding, per layer RMSNorm -> Q/K/V (optional
// bias) -> RoPE -> grouped-query attention over the KV cache -> output projection, RMSNorm ->
// SwiGLU FFN, residuals; final RMSNorm and a tied or separate output matrix. RoPE rotates
// interleaved pairs (x[2i], x[2i+1]) for GGUF "llama" weights (the converter permutes Q/K rows
// for that) and halves (x[i], x[i+D/2]) for "qwen2". CPU computes in fp32; on a CUDA build of
// libtorch the same code runs with fp16/bf16 weights (RunnerOptions).
//
//   KVS_ASSIGN_OR_RETURN(kvs::GgufFile f, kvs::GgufFile::Open(path));
//   kvs::RunnerOptions opts;
//   opts.threads = 2;
//   KVS_ASSIGN_OR_RETURN(std::unique_ptr<kvs::LlamaModel> m, kvs::LlamaModel::Load(f, opts));
//   KVS_ASSIGN_OR_RETURN(kvs::PrefillResult p, m->Prefill(prompt_ids));      // KV + last logits
//   int32_t next = kvs::ArgMax(p.last_logits);
//   KVS_ASSIGN_OR_RETURN(std::vector<float> logits, m->Step(&p.cache, next)); // decode one token
//
// The KV cache is K and V, each [L, H_kv, S, D], keys after RoPE (ARCHITECTURE.md §2). It
// converts to and from fp16 buffers laid out as kvs::KvCacheView (common/tensor/kv.h), so codecs
// can run on it, and it can carry a keep mask: positions with mask 0 are evicted and attention
// ignores them (token pruning); their RoPE positions still count, so later tokens keep theirs.
// A mask is one entry per position for every layer, or one per (layer, position) when a pruning
// codec chose positions per layer slab (the data plane encodes each chunk of layers on its own).
//
// Thread-safety: a LlamaModel is immutable after Load(); its const methods may run concurrently
// on distinct KvCache objects. A KvCache is not thread-safe. Load() sets libtorch's (process-wide)
// intra-op thread count from RunnerOptions::threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/tensor/kv.h"

namespace kvs {

class GgufFile;

enum class RopeStyle { kInterleaved, kHalf };

struct ModelConfig {
  std::string architecture;  // general.architecture: "llama" or "qwen2"
  std::string name;          // general.name, when present
  int64_t layers = 0;
  int64_t dim = 0;        // embedding width
  int64_t hidden = 0;     // FFN width
  int64_t heads = 0;      // query heads
  int64_t kv_heads = 0;   // key/value heads (GQA when < heads)
  int64_t head_dim = 0;
  int64_t vocab = 0;
  int64_t context = 0;    // trained context length (informational: longer sequences still run)
  double rope_base = 10000.0;
  double rms_eps = 1e-5;
  RopeStyle rope = RopeStyle::kInterleaved;
  bool tied_output = false;  // output matrix is the token embedding
  bool qkv_bias = false;

  // [L, H_kv, tokens, D]
  KvGeometry KvGeometryFor(int64_t tokens) const { return {layers, kv_heads, tokens, head_dim}; }
  std::string ToString() const;
};

struct RunnerOptions {
  // Intra-op threads for libtorch (and OpenBLAS when it is the BLAS). 0 leaves the current
  // setting. libtorch's setting is process-wide: the last Load() wins.
  int threads = 0;
  // "cpu" or "cuda" (the latter only when libtorch was built with CUDA and a device is present).
  std::string device = "cpu";
  // Compute and cache dtype: "f32" (default), or "f16"/"bf16" (CUDA only).
  std::string dtype = "f32";
};

// Row-major logits, rows x vocab.
struct Logits {
  int64_t rows = 0;
  int64_t vocab = 0;
  std::vector<float> data;

  const float* row(int64_t i) const { return data.data() + i * vocab; }
  absl::Span<const float> Row(int64_t i) const { return {row(i), static_cast<size_t>(vocab)}; }
};

// Index of the largest value (the first on ties), or -1 for an empty span.
int32_t ArgMax(absl::Span<const float> v);

// A KV cache: one sequence (a request), or a batch of B sequences of equal length that run
// through the model together (the quality benchmark scores every codec's reconstruction of one
// prompt in one batched forward pass). Move-only; Clone() copies.
class KvCache {
 public:
  KvCache();
  KvCache(KvCache&&) noexcept;
  KvCache& operator=(KvCache&&) noexcept;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  ~KvCache();

  // Sequences held (1 unless built by LlamaModel::ImportF16Batch).
  int64_t batch() const;
  // Positions held per sequence (evicted ones included).
  int64_t tokens() const;
  // Geometry of one sequence: [L, H_kv, tokens(), D].
  KvGeometry geometry() const;
  // Layer `layer`'s keep mask of sequence b: one entry per position, 1 = attended, 0 = evicted;
  // empty when nothing is evicted in any layer of any sequence.
  std::vector<uint8_t> keep_mask(int64_t b = 0, int64_t layer = 0) const;
  // Positions of sequence b evicted in layer `layer`.
  int64_t evicted(int64_t b = 0, int64_t layer = 0) const;
  // Replaces the keep mask of sequence b: empty ("keep all"), tokens() entries (every layer the
  // same), or layers x tokens() entries, layer-major (one mask per layer).
  absl::Status SetKeepMask(absl::Span<const uint8_t> keep, int64_t b = 0);

  // Writes sequence b's K and V as 16-bit floats into `out`, whose geometry must equal
  // geometry() (dtype fp16 or bf16, as out says).
  absl::Status ExportF16(const MutableKvCacheView& out, int64_t b = 0) const;
  // Convenience: K and V as fp16 vectors of geometry().elements() each.
  absl::Status ExportF16(std::vector<uint16_t>* k, std::vector<uint16_t>* v, int64_t b = 0) const;

  // A copy of the first `p` positions of every sequence (and their keep masks).
  absl::StatusOr<KvCache> Prefix(int64_t p) const;
  KvCache Clone() const;

 private:
  friend class LlamaModel;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct PrefillResult {
  KvCache cache;
  std::vector<float> last_logits;  // logits after the last prompt token
};

// One layer of a prompt's KV as Prefill computes it: K (after RoPE) and V, each fp32 [H_kv, S, D]
// contiguous (the layout of one layer of the KV cache). Valid only during the callback.
struct PrefillLayer {
  int64_t layer = 0;
  KvGeometry geom;  // {1, H_kv, S, D}
  const float* k = nullptr;
  const float* v = nullptr;

  // Writes this layer into out.k.layer(layer) / out.v.layer(layer) as 16-bit floats (out's dtype),
  // exactly as KvCache::ExportF16 writes it. out's geometry must be [L, H_kv, S, D].
  absl::Status ExportF16(const MutableKvCacheView& out) const;
};
// Called by Prefill right after layer l's K and V are in the cache, before layer l+1 runs, for
// l = 0 .. L-1 in order. An error stops the prefill and is returned.
using PrefillLayerFn = std::function<absl::Status(const PrefillLayer&)>;

class LlamaModel {
 public:
  // Reads the config and weights (any dtype GgufFile dequantises) and builds the model.
  // InvalidArgument for missing or mis-shaped tensors, Unimplemented for other architectures.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const GgufFile& gguf,
                                                          const RunnerOptions& options);
  ~LlamaModel();

  const ModelConfig& config() const { return config_; }
  // An empty cache (S = 0) for this model.
  KvCache NewCache() const;

  // Runs the prompt from scratch: the KV cache of all its tokens and the last token's logits.
  // `on_layer`, when set, sees each layer's K and V as soon as they are computed (so a caller can
  // ship layer l while layers l+1.. compute); the results are the same with or without it.
  absl::StatusOr<PrefillResult> Prefill(absl::Span<const int32_t> tokens,
                                        const PrefillLayerFn& on_layer = nullptr) const;
  // Appends T tokens to every sequence of `cache` (positions cache->tokens() onwards) in one
  // forward pass. `tokens` holds batch() x T ids, sequence-major. Returns their logits: every
  // position (batch() x T rows, sequence-major) when all_logits, else the last position of each
  // sequence (batch() rows).
  absl::StatusOr<Logits> Extend(KvCache* cache, absl::Span<const int32_t> tokens,
                                bool all_logits) const;
  // One decode step of a single-sequence cache: appends `token`, returns the next-token logits.
  absl::StatusOr<std::vector<float>> Step(KvCache* cache, int32_t token) const;
  // One decode step of every sequence: tokens[b] is appended to sequence b; batch() rows.
  absl::StatusOr<Logits> StepBatch(KvCache* cache, absl::Span<const int32_t> tokens) const;
  // Teacher forcing: logits at each continuation position given `prefix` (not modified), in one
  // forward pass; every sequence of a batch sees the same continuation. Row b*m + i predicts the
  // token after continuation[i] in sequence b (m = continuation length).
  absl::StatusOr<Logits> Score(const KvCache& prefix, absl::Span<const int32_t> continuation) const;

  // Builds a cache from 16-bit K and V [L, H_kv, S, D] (geometry must match this model) and an
  // optional keep mask of S or L x S entries (0 = evicted, masked out of attention; see
  // KvCache::SetKeepMask).
  absl::StatusOr<KvCache> ImportF16(const KvCacheView& kv,
                                    absl::Span<const uint8_t> keep_mask = {}) const;
  // Builds a batch cache, one sequence per view (all of one geometry); keep_masks is empty or has
  // one entry per view (each empty, S or L x S entries).
  absl::StatusOr<KvCache> ImportF16Batch(absl::Span<const KvCacheView> kvs,
                                         absl::Span<const std::vector<uint8_t>> keep_masks) const;

 private:
  struct Weights;
  LlamaModel();
  absl::StatusOr<Logits> ExtendImpl(KvCache* cache, absl::Span<const int32_t> tokens,
                                    bool all_logits, const PrefillLayerFn* on_layer) const;

  ModelConfig config_;
  std::unique_ptr<Weights> w_;
};

}  // namespace kvs
