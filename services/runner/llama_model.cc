// services/runner/llama_model.cc — the Llama-family decoder on libtorch (ATen only, to keep this,
// kvshuttle's one torch translation unit, cheap to compile). Uses only API present in both
// libtorch 1.13 and PyTorch 2.x: no scaled_dot_product_attention, no nn modules.
#include "services/runner/model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/half/half.h"
#include "common/status/status.h"
#include "services/runner/gguf.h"

namespace kvs {

// ---- KvCache --------------------------------------------------------------------------------

struct KvCache::Impl {
  std::vector<at::Tensor> k, v;  // per layer [B, H_kv, capacity, D]
  int64_t batch = 1;
  int64_t len = 0;
  int64_t layers = 0, kv_heads = 0, head_dim = 0;
  // keep[b][l]: sequence b's mask for layer l, len entries; the outer vector is empty when nothing
  // is evicted anywhere.
  std::vector<std::vector<std::vector<uint8_t>>> keep;
  at::TensorOptions opts;

  int64_t capacity() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(2); }

  void Allocate(int64_t cap) {
    k.resize(layers);
    v.resize(layers);
    for (int64_t l = 0; l < layers; ++l) {
      k[l] = at::empty({batch, kv_heads, cap, head_dim}, opts);
      v[l] = at::empty({batch, kv_heads, cap, head_dim}, opts);
    }
  }

  // Makes room for `need` positions, copying what is held.
  void Reserve(int64_t need) {
    if (need <= capacity()) return;
    const int64_t cap = std::max<int64_t>({need, 2 * capacity(), 64});
    std::vector<at::Tensor> ok = std::move(k), ov = std::move(v);
    Allocate(cap);
    for (int64_t l = 0; l < layers && len > 0; ++l) {
      k[l].narrow(2, 0, len).copy_(ok[l].narrow(2, 0, len));
      v[l].narrow(2, 0, len).copy_(ov[l].narrow(2, 0, len));
    }
  }

  std::unique_ptr<Impl> Copy(int64_t positions, int64_t cap) const {
    auto c = std::make_unique<Impl>();
    c->batch = batch;
    c->layers = layers;
    c->kv_heads = kv_heads;
    c->head_dim = head_dim;
    c->opts = opts;
    c->Allocate(std::max<int64_t>(cap, 1));
    for (int64_t l = 0; l < layers && positions > 0; ++l) {
      c->k[l].narrow(2, 0, positions).copy_(k[l].narrow(2, 0, positions));
      c->v[l].narrow(2, 0, positions).copy_(v[l].narrow(2, 0, positions));
    }
    c->len = positions;
    for (const auto& seq : keep) {
      c->keep.emplace_back();
      for (const std::vector<uint8_t>& m : seq) c->keep.back().emplace_back(m.begin(), m.begin() + positions);
    }
    c->Normalize();
    return c;
  }

  // Drops the masks when no sequence has an evicted position.
  void Normalize() {
    for (const auto& seq : keep) {
      for (const std::vector<uint8_t>& m : seq) {
        if (std::find(m.begin(), m.end(), uint8_t{0}) != m.end()) return;
      }
    }
    keep.clear();
  }
};

KvCache::KvCache() = default;
KvCache::KvCache(KvCache&&) noexcept = default;
KvCache& KvCache::operator=(KvCache&&) noexcept = default;
KvCache::~KvCache() = default;

int64_t KvCache::batch() const { return impl_ ? impl_->batch : 0; }
int64_t KvCache::tokens() const { return impl_ ? impl_->len : 0; }

KvGeometry KvCache::geometry() const {
  if (!impl_) return {};
  return {impl_->layers, impl_->kv_heads, impl_->len, impl_->head_dim};
}

std::vector<uint8_t> KvCache::keep_mask(int64_t b, int64_t layer) const {
  if (!impl_ || impl_->keep.empty() || b < 0 || b >= impl_->batch || layer < 0 ||
      layer >= impl_->layers) {
    return {};
  }
  return impl_->keep[b][layer];
}

int64_t KvCache::evicted(int64_t b, int64_t layer) const {
  const std::vector<uint8_t> m = keep_mask(b, layer);
  return std::count(m.begin(), m.end(), uint8_t{0});
}

absl::Status KvCache::SetKeepMask(absl::Span<const uint8_t> keep, int64_t b) {
  if (!impl_) return absl::FailedPreconditionError("kv cache: not created by a model");
  if (b < 0 || b >= impl_->batch) {
    return absl::OutOfRangeError(absl::StrCat("kv cache: sequence ", b, " of ", impl_->batch));
  }
  const int64_t n = static_cast<int64_t>(keep.size()), S = impl_->len, L = impl_->layers;
  const bool per_layer = n == L * S && L > 1;
  if (n != 0 && n != S && !per_layer) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache: keep mask has ", n, " entries for ", S,
                                                   " positions (want ", S, " or ", L, " x ", S, ")"));
  }
  if (impl_->keep.empty()) {
    impl_->keep.assign(impl_->batch, std::vector<std::vector<uint8_t>>(
                                         L, std::vector<uint8_t>(static_cast<size_t>(S), 1)));
  }
  for (int64_t l = 0; l < L; ++l) {
    std::vector<uint8_t>& m = impl_->keep[b][l];
    for (int64_t i = 0; i < S; ++i) {
      m[i] = n == 0 ? 1 : keep[per_layer ? l * S + i : i] != 0;
    }
  }
  impl_->Normalize();
  return absl::OkStatus();
}

absl::Status KvCache::ExportF16(const MutableKvCacheView& out, int64_t b) const {
  if (!impl_) return absl::FailedPreconditionError("kv cache: not created by a model");
  if (b < 0 || b >= impl_->batch) {
    return absl::OutOfRangeError(absl::StrCat("kv cache: sequence ", b, " of ", impl_->batch));
  }
  if (out.k.geom != geometry() || out.v.geom != geometry() || out.k.data == nullptr ||
      out.v.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache: export target ",
                                                   out.k.geom.ToString(), " does not match ",
                                                   geometry().ToString()));
  }
  try {
    c10::InferenceMode guard;
    const int64_t n = impl_->kv_heads * impl_->len * impl_->head_dim;
    for (int64_t l = 0; l < impl_->layers; ++l) {
      for (int which = 0; which < 2; ++which) {
        const at::Tensor& src = which == 0 ? impl_->k[l] : impl_->v[l];
        const MutableKvTensorView& dst = which == 0 ? out.k : out.v;
        at::Tensor f = src.select(0, b).narrow(1, 0, impl_->len).to(at::kCPU, at::kFloat).contiguous();
        const float* p = f.data_ptr<float>();
        if (dst.dtype == DType::kBF16) {
          FloatToBf16N(p, dst.layer(l), static_cast<size_t>(n));
        } else {
          FloatToHalfN(p, dst.layer(l), static_cast<size_t>(n));
        }
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("kv export: libtorch: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status PrefillLayer::ExportF16(const MutableKvCacheView& out) const {
  if (k == nullptr || v == nullptr || out.k.data == nullptr || out.v.data == nullptr ||
      out.k.geom != out.v.geom || out.k.geom.heads != geom.heads || out.k.geom.tokens != geom.tokens ||
      out.k.geom.head_dim != geom.head_dim || layer < 0 || layer >= out.k.geom.layers) {
    return absl::InvalidArgumentError(absl::StrCat("prefill layer ", layer, " ", geom.ToString(),
                                                   ": export target ", out.k.geom.ToString(),
                                                   " does not fit"));
  }
  const size_t n = static_cast<size_t>(geom.layer_elements());
  for (int which = 0; which < 2; ++which) {
    const float* p = which == 0 ? k : v;
    const MutableKvTensorView& dst = which == 0 ? out.k : out.v;
    if (dst.dtype == DType::kBF16) {
      FloatToBf16N(p, dst.layer(layer), n);
    } else {
      FloatToHalfN(p, dst.layer(layer), n);
    }
  }
  return absl::OkStatus();
}

absl::Status KvCache::ExportF16(std::vector<uint16_t>* k, std::vector<uint16_t>* v, int64_t b) const {
  const KvGeometry g = geometry();
  k->resize(static_cast<size_t>(g.elements()));
  v->resize(static_cast<size_t>(g.elements()));
  MutableKvCacheView view{{k->data(), g, DType::kF16}, {v->data(), g, DType::kF16}};
  return ExportF16(view, b);
}

absl::StatusOr<KvCache> KvCache::Prefix(int64_t p) const {
  if (!impl_) return absl::FailedPreconditionError("kv cache: not created by a model");
  if (p < 0 || p > impl_->len) {
    return absl::OutOfRangeError(
        absl::StrCat("kv cache: prefix of ", p, " positions from a cache of ", impl_->len));
  }
  try {
    c10::InferenceMode guard;
    KvCache c;
    c.impl_ = impl_->Copy(p, p);
    return c;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("kv prefix: libtorch: ", e.what()));
  }
}

KvCache KvCache::Clone() const {
  KvCache c;
  if (impl_) {
    c10::InferenceMode guard;
    c.impl_ = impl_->Copy(impl_->len, impl_->len);
  }
  return c;
}

// ---- model ----------------------------------------------------------------------------------

std::string ModelConfig::ToString() const {
  return absl::StrCat(architecture, " '", name, "': layers ", layers, ", dim ", dim, ", hidden ",
                      hidden, ", heads ", heads, "/", kv_heads, " (head_dim ", head_dim,
                      "), vocab ", vocab, ", context ", context, ", rope ",
                      rope == RopeStyle::kInterleaved ? "interleaved" : "half", " base ",
                      rope_base, ", rms eps ", rms_eps, tied_output ? ", tied output" : "",
                      qkv_bias ? ", qkv bias" : "");
}

int32_t ArgMax(absl::Span<const float> v) {
  if (v.empty()) return -1;
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct LlamaModel::Weights {
  struct Layer {
    at::Tensor attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, w_gate, w_up, w_down;
  };
  at::Tensor tok_embd;  // [vocab, dim]
  at::Tensor out_norm;
  at::Tensor output;    // [vocab, dim]; aliases tok_embd when tied
  at::Tensor inv_freq;  // [D/2] fp64 on CPU
  std::vector<Layer> layers;
  at::TensorOptions opts;  // compute dtype and device
};

LlamaModel::LlamaModel() = default;
LlamaModel::~LlamaModel() = default;

namespace {

// Reads tensor `name` with GGUF dims `dims` (ne0 first) as a row-major fp32 CPU tensor of shape
// reverse(dims), then moves it to the compute device/dtype.
absl::StatusOr<at::Tensor> LoadTensor(const GgufFile& f, const std::string& name,
                                      const std::vector<int64_t>& dims,
                                      const at::TensorOptions& opts) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("model: tensor '", name, "' missing"));
  if (t->dims != dims) {
    return absl::InvalidArgumentError(absl::StrCat("model: tensor '", name, "' has dims {",
                                                   absl::StrJoin(t->dims, ","), "}, want {",
                                                   absl::StrJoin(dims, ","), "}"));
  }
  std::vector<int64_t> shape(dims.rbegin(), dims.rend());
  at::Tensor cpu = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  KVS_RETURN_IF_ERROR(f.DequantizeF32(*t, absl::MakeSpan(cpu.data_ptr<float>(), t->elements)));
  return cpu.to(opts.device(), opts.dtype());
}

absl::Status ReadConfig(const GgufFile& f, ModelConfig* c) {
  KVS_ASSIGN_OR_RETURN(c->architecture, f.GetString("general.architecture"));
  if (c->architecture == "llama") {
    c->rope = RopeStyle::kInterleaved;
  } else if (c->architecture == "qwen2") {
    c->rope = RopeStyle::kHalf;
  } else {
    return absl::UnimplementedError(absl::StrCat("model: architecture '", c->architecture,
                                                 "' unsupported (want llama or qwen2)"));
  }
  if (f.Has("general.name")) {
    KVS_ASSIGN_OR_RETURN(c->name, f.GetString("general.name"));
  }
  const std::string a = c->architecture + ".";
  auto u = [&](const std::string& key, int64_t* out) -> absl::Status {
    KVS_ASSIGN_OR_RETURN(uint64_t v, f.GetUint(a + key));
    if (v == 0 || v > (uint64_t{1} << 31)) {
      return absl::InvalidArgumentError(absl::StrCat("model: ", a, key, " = ", v, " out of range"));
    }
    *out = static_cast<int64_t>(v);
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(u("block_count", &c->layers));
  KVS_RETURN_IF_ERROR(u("embedding_length", &c->dim));
  KVS_RETURN_IF_ERROR(u("feed_forward_length", &c->hidden));
  KVS_RETURN_IF_ERROR(u("attention.head_count", &c->heads));
  c->kv_heads = c->heads;
  if (f.Has(a + "attention.head_count_kv")) KVS_RETURN_IF_ERROR(u("attention.head_count_kv", &c->kv_heads));
  c->context = 0;
  if (f.Has(a + "context_length")) KVS_RETURN_IF_ERROR(u("context_length", &c->context));
  if (c->dim % c->heads != 0 || c->heads % c->kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model: dim ", c->dim, " / heads ", c->heads,
                                                   " / kv heads ", c->kv_heads, " do not divide"));
  }
  c->head_dim = c->dim / c->heads;
  if (f.Has(a + "attention.key_length")) KVS_RETURN_IF_ERROR(u("attention.key_length", &c->head_dim));
  if (c->head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model: odd head_dim ", c->head_dim));
  }
  KVS_ASSIGN_OR_RETURN(uint64_t rope_dims, f.GetUintOr(a + "rope.dimension_count", c->head_dim));
  if (static_cast<int64_t>(rope_dims) != c->head_dim) {
    return absl::UnimplementedError(absl::StrCat("model: partial rotary embeddings (", rope_dims,
                                                 " of ", c->head_dim, " dims) unsupported"));
  }
  KVS_ASSIGN_OR_RETURN(c->rope_base, f.GetFloatOr(a + "rope.freq_base", 10000.0));
  KVS_ASSIGN_OR_RETURN(c->rms_eps, f.GetFloatOr(a + "attention.layer_norm_rms_epsilon", 1e-5));
  if (f.Has(a + "rope.scaling.type")) {
    KVS_ASSIGN_OR_RETURN(std::string scaling, f.GetString(a + "rope.scaling.type"));
    if (scaling != "none") {
      return absl::UnimplementedError(absl::StrCat("model: rope scaling '", scaling, "' unsupported"));
    }
  }
  const GgufTensorInfo* emb = f.FindTensor("token_embd.weight");
  if (emb == nullptr || emb->dims.size() != 2 || emb->dims[0] != c->dim) {
    return absl::InvalidArgumentError("model: token_embd.weight missing or not [dim, vocab]");
  }
  c->vocab = emb->dims[1];
  c->tied_output = f.FindTensor("output.weight") == nullptr;
  c->qkv_bias = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  return absl::OkStatus();
}

// Sets libtorch's intra-op threads and, when OpenBLAS is loaded, OpenBLAS's own pool.
void SetThreads(int n) {
  if (n <= 0) return;
  at::set_num_threads(n);
  using SetFn = void (*)(int);
  if (void* sym = ::dlsym(RTLD_DEFAULT, "openblas_set_num_threads")) {
    reinterpret_cast<SetFn>(sym)(n);
  }
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor r = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (xf * r).to(x.scalar_type()) * w;
}

// x: [..., T, D]; cos/sin: [T, D/2].
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     RopeStyle style) {
  const int64_t d = x.size(-1);
  if (style == RopeStyle::kInterleaved) {
    std::vector<int64_t> pairs(x.sizes().begin(), x.sizes().end());
    pairs.back() = d / 2;
    pairs.push_back(2);
    at::Tensor p = x.reshape(pairs);
    at::Tensor x0 = p.select(-1, 0), x1 = p.select(-1, 1);
    return at::stack({x0 * cos - x1 * sin, x0 * sin + x1 * cos}, -1).reshape(x.sizes());
  }
  at::Tensor x0 = x.narrow(-1, 0, d / 2), x1 = x.narrow(-1, d / 2, d / 2);
  return at::cat({x0 * cos - x1 * sin, x1 * cos + x0 * sin}, -1);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const GgufFile& f,
                                                              const RunnerOptions& options) {
  try {
    SetThreads(options.threads);
    c10::InferenceMode guard;
    std::unique_ptr<LlamaModel> m(new LlamaModel());
    KVS_RETURN_IF_ERROR(ReadConfig(f, &m->config_));
    const ModelConfig& c = m->config_;

    at::TensorOptions opts = at::TensorOptions().dtype(at::kFloat);
    if (options.device == "cuda") {
      if (!at::hasCUDA()) {
        return absl::FailedPreconditionError("model: device 'cuda' asked for, but libtorch has no CUDA device");
      }
      opts = opts.device(at::kCUDA);
    } else if (options.device != "cpu") {
      return absl::InvalidArgumentError(absl::StrCat("model: unknown device '", options.device, "'"));
    }
    if (options.dtype == "f16" || options.dtype == "bf16") {
      if (options.device != "cuda") {
        return absl::InvalidArgumentError("model: f16/bf16 compute is for CUDA; the CPU runs f32");
      }
      opts = opts.dtype(options.dtype == "f16" ? at::kHalf : at::kBFloat16);
    } else if (options.dtype != "f32") {
      return absl::InvalidArgumentError(absl::StrCat("model: unknown dtype '", options.dtype, "'"));
    }

    m->w_ = std::make_unique<Weights>();
    Weights& w = *m->w_;
    w.opts = opts;
    const int64_t qd = c.heads * c.head_dim, kvd = c.kv_heads * c.head_dim;
    KVS_ASSIGN_OR_RETURN(w.tok_embd, LoadTensor(f, "token_embd.weight", {c.dim, c.vocab}, opts));
    KVS_ASSIGN_OR_RETURN(w.out_norm, LoadTensor(f, "output_norm.weight", {c.dim}, opts));
    if (c.tied_output) {
      w.output = w.tok_embd;
    } else {
      KVS_ASSIGN_OR_RETURN(w.output, LoadTensor(f, "output.weight", {c.dim, c.vocab}, opts));
    }
    w.layers.resize(c.layers);
    for (int64_t l = 0; l < c.layers; ++l) {
      Weights::Layer& L = w.layers[l];
      const std::string p = absl::StrCat("blk.", l, ".");
      KVS_ASSIGN_OR_RETURN(L.attn_norm, LoadTensor(f, p + "attn_norm.weight", {c.dim}, opts));
      KVS_ASSIGN_OR_RETURN(L.wq, LoadTensor(f, p + "attn_q.weight", {c.dim, qd}, opts));
      KVS_ASSIGN_OR_RETURN(L.wk, LoadTensor(f, p + "attn_k.weight", {c.dim, kvd}, opts));
      KVS_ASSIGN_OR_RETURN(L.wv, LoadTensor(f, p + "attn_v.weight", {c.dim, kvd}, opts));
      KVS_ASSIGN_OR_RETURN(L.wo, LoadTensor(f, p + "attn_output.weight", {qd, c.dim}, opts));
      if (c.qkv_bias) {
        KVS_ASSIGN_OR_RETURN(L.bq, LoadTensor(f, p + "attn_q.bias", {qd}, opts));
        KVS_ASSIGN_OR_RETURN(L.bk, LoadTensor(f, p + "attn_k.bias", {kvd}, opts));
        KVS_ASSIGN_OR_RETURN(L.bv, LoadTensor(f, p + "attn_v.bias", {kvd}, opts));
      }
      KVS_ASSIGN_OR_RETURN(L.ffn_norm, LoadTensor(f, p + "ffn_norm.weight", {c.dim}, opts));
      KVS_ASSIGN_OR_RETURN(L.w_gate, LoadTensor(f, p + "ffn_gate.weight", {c.dim, c.hidden}, opts));
      KVS_ASSIGN_OR_RETURN(L.w_up, LoadTensor(f, p + "ffn_up.weight", {c.dim, c.hidden}, opts));
      KVS_ASSIGN_OR_RETURN(L.w_down, LoadTensor(f, p + "ffn_down.weight", {c.hidden, c.dim}, opts));
    }
    // inv_freq[i] = base^(-2i/D), in fp64 so that the angles match llama2.c's to float precision.
    w.inv_freq = at::pow(c.rope_base, at::arange(0, c.head_dim, 2, at::TensorOptions().dtype(at::kDouble)) /
                                          static_cast<double>(c.head_dim))
                     .reciprocal();
    return m;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model load: libtorch: ", e.what()));
  }
}

KvCache LlamaModel::NewCache() const {
  KvCache c;
  c.impl_ = std::make_unique<KvCache::Impl>();
  c.impl_->layers = config_.layers;
  c.impl_->kv_heads = config_.kv_heads;
  c.impl_->head_dim = config_.head_dim;
  c.impl_->opts = w_->opts;
  c.impl_->k.resize(config_.layers);
  c.impl_->v.resize(config_.layers);
  return c;
}

absl::StatusOr<Logits> LlamaModel::Extend(KvCache* cache, absl::Span<const int32_t> tokens,
                                          bool all_logits) const {
  // libtorch reports failures (out of memory, internal shape errors) as exceptions; none may
  // leave the runner.
  try {
    return ExtendImpl(cache, tokens, all_logits, /*on_layer=*/nullptr);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model: libtorch: ", e.what()));
  }
}

absl::StatusOr<Logits> LlamaModel::ExtendImpl(KvCache* cache, absl::Span<const int32_t> tokens,
                                              bool all_logits, const PrefillLayerFn* on_layer) const {
  const ModelConfig& c = config_;
  if (cache == nullptr || !cache->impl_) {
    return absl::FailedPreconditionError("model: the cache was not created by a model");
  }
  KvCache::Impl& kv = *cache->impl_;
  if (kv.layers != c.layers || kv.kv_heads != c.kv_heads || kv.head_dim != c.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("model: cache geometry ", cache->geometry().ToString(),
                                                   " does not fit ", c.ToString()));
  }
  const int64_t B = kv.batch;
  if (tokens.empty()) return absl::InvalidArgumentError("model: no tokens to run");
  if (static_cast<int64_t>(tokens.size()) % B != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model: ", tokens.size(),
                                                   " tokens do not split over ", B, " sequences"));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab) {
      return absl::InvalidArgumentError(absl::StrCat("model: token id ", t, " outside the vocabulary of ", c.vocab));
    }
  }
  c10::InferenceMode guard;
  const Weights& w = *w_;
  const int64_t T = static_cast<int64_t>(tokens.size()) / B;
  const int64_t S0 = kv.len, S = S0 + T;
  const int64_t group = c.heads / c.kv_heads;
  kv.Reserve(S);

  // RoPE angles for positions S0 .. S-1.
  at::Tensor pos = at::arange(S0, S, at::TensorOptions().dtype(at::kDouble));
  at::Tensor ang = at::outer(pos, w.inv_freq);
  at::Tensor cos = ang.cos().to(w.opts.device(), w.opts.dtype());
  at::Tensor sin = ang.sin().to(w.opts.device(), w.opts.dtype());

  // Additive attention masks per layer, [B or 1, 1, 1, T, S]: causal, plus the layer's evicted
  // positions; layers whose masks equal the previous layer's share its tensor. None for one token
  // with nothing evicted.
  std::vector<at::Tensor> masks(static_cast<size_t>(c.layers));
  if (T > 1 || !kv.keep.empty()) {
    const int64_t mb = kv.keep.empty() ? 1 : B;
    auto same_as_previous = [&](int64_t l) {
      if (kv.keep.empty()) return true;
      for (int64_t b = 0; b < B; ++b) {
        if (kv.keep[b][l] != kv.keep[b][l - 1]) return false;
      }
      return true;
    };
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t l = 0; l < c.layers; ++l) {
      if (l > 0 && same_as_previous(l)) {
        masks[l] = masks[l - 1];
        continue;
      }
      at::Tensor m = at::zeros({mb, 1, 1, T, S}, at::TensorOptions().dtype(at::kFloat));
      float* mp = m.data_ptr<float>();
      for (int64_t b = 0; b < mb; ++b) {
        for (int64_t i = 0; i < T; ++i) {
          float* row = mp + (b * T + i) * S;
          for (int64_t j = S0 + i + 1; j < S; ++j) row[j] = ninf;
          if (!kv.keep.empty()) {
            const std::vector<uint8_t>& keep = kv.keep[b][l];
            for (int64_t j = 0; j < S0; ++j) {
              if (keep[j] == 0) row[j] = ninf;
            }
          }
        }
      }
      masks[l] = m.to(w.opts.device());
    }
  }

  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  at::Tensor idx = at::from_blob(ids.data(), {B, T}, at::TensorOptions().dtype(at::kLong)).to(w.opts.device());
  at::Tensor x = at::embedding(w.tok_embd, idx);  // [B, T, dim]
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  auto bias = [](const at::Tensor& t) {
    return t.defined() ? c10::optional<at::Tensor>(t) : c10::optional<at::Tensor>();
  };

  for (int64_t l = 0; l < c.layers; ++l) {
    const Weights::Layer& L = w.layers[l];
    at::Tensor h = RmsNorm(x, L.attn_norm, c.rms_eps);
    at::Tensor q = at::linear(h, L.wq, bias(L.bq)).view({B, T, c.heads, c.head_dim}).permute({0, 2, 1, 3});
    at::Tensor k = at::linear(h, L.wk, bias(L.bk)).view({B, T, c.kv_heads, c.head_dim}).permute({0, 2, 1, 3});
    at::Tensor v = at::linear(h, L.wv, bias(L.bv)).view({B, T, c.kv_heads, c.head_dim}).permute({0, 2, 1, 3});
    q = ApplyRope(q, cos, sin, c.rope);  // [B, H, T, D]
    k = ApplyRope(k, cos, sin, c.rope);  // [B, Hkv, T, D]
    kv.k[l].narrow(2, S0, T).copy_(k);
    kv.v[l].narrow(2, S0, T).copy_(v);
    if (on_layer != nullptr && *on_layer) {
      // The prompt's K and V of this layer, as ExportF16 reads them from the cache.
      at::Tensor kf = kv.k[l].select(0, 0).narrow(1, 0, S).to(at::kCPU, at::kFloat).contiguous();
      at::Tensor vf = kv.v[l].select(0, 0).narrow(1, 0, S).to(at::kCPU, at::kFloat).contiguous();
      PrefillLayer pl;
      pl.layer = l;
      pl.geom = {1, c.kv_heads, S, c.head_dim};
      pl.k = kf.data_ptr<float>();
      pl.v = vf.data_ptr<float>();
      KVS_RETURN_IF_ERROR((*on_layer)(pl));
    }
    at::Tensor K = kv.k[l].narrow(2, 0, S).unsqueeze(2);  // [B, Hkv, 1, S, D]
    at::Tensor V = kv.v[l].narrow(2, 0, S).unsqueeze(2);
    at::Tensor qg = q.reshape({B, c.kv_heads, group, T, c.head_dim});
    at::Tensor scores = at::matmul(qg, K.transpose(-1, -2)).to(at::kFloat) * scale;  // [B,Hkv,G,T,S]
    if (masks[l].defined()) scores = scores + masks[l];
    at::Tensor probs = at::softmax(scores, -1).to(w.opts.dtype());
    at::Tensor o = at::matmul(probs, V)  // [B, Hkv, G, T, D]
                       .reshape({B, c.heads, T, c.head_dim})
                       .permute({0, 2, 1, 3})
                       .reshape({B, T, c.heads * c.head_dim});
    x = x + at::linear(o, L.wo);
    h = RmsNorm(x, L.ffn_norm, c.rms_eps);
    x = x + at::linear(at::silu(at::linear(h, L.w_gate)) * at::linear(h, L.w_up), L.w_down);
  }
  kv.len = S;
  for (auto& seq : kv.keep) {
    for (std::vector<uint8_t>& m : seq) m.resize(static_cast<size_t>(S), 1);
  }

  if (!all_logits) x = x.narrow(1, T - 1, 1);
  at::Tensor logits = at::linear(RmsNorm(x, w.out_norm, c.rms_eps), w.output)
                          .reshape({-1, c.vocab})
                          .to(at::kCPU, at::kFloat)
                          .contiguous();
  Logits out;
  out.rows = logits.size(0);
  out.vocab = c.vocab;
  out.data.assign(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  return out;
}

absl::StatusOr<PrefillResult> LlamaModel::Prefill(absl::Span<const int32_t> tokens,
                                                  const PrefillLayerFn& on_layer) const {
  PrefillResult r;
  r.cache = NewCache();
  absl::StatusOr<Logits> l;
  try {
    l = ExtendImpl(&r.cache, tokens, /*all_logits=*/false, on_layer ? &on_layer : nullptr);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model: libtorch: ", e.what()));
  }
  if (!l.ok()) return l.status();
  r.last_logits = std::move(l->data);
  return r;
}

absl::StatusOr<std::vector<float>> LlamaModel::Step(KvCache* cache, int32_t token) const {
  if (cache != nullptr && cache->batch() > 1) {
    return absl::InvalidArgumentError("model: Step on a batch cache (use StepBatch)");
  }
  KVS_ASSIGN_OR_RETURN(Logits l, Extend(cache, absl::MakeConstSpan(&token, 1), /*all_logits=*/false));
  return std::move(l.data);
}

absl::StatusOr<Logits> LlamaModel::StepBatch(KvCache* cache, absl::Span<const int32_t> tokens) const {
  if (cache == nullptr || static_cast<int64_t>(tokens.size()) != cache->batch()) {
    return absl::InvalidArgumentError(absl::StrCat("model: StepBatch wants one token per sequence (",
                                                   cache ? cache->batch() : 0, "), got ", tokens.size()));
  }
  return Extend(cache, tokens, /*all_logits=*/false);
}

absl::StatusOr<Logits> LlamaModel::Score(const KvCache& prefix,
                                         absl::Span<const int32_t> continuation) const {
  if (!prefix.impl_) return absl::FailedPreconditionError("model: the cache was not created by a model");
  const int64_t B = prefix.impl_->batch;
  std::vector<int32_t> tokens;
  tokens.reserve(continuation.size() * B);
  for (int64_t b = 0; b < B; ++b) tokens.insert(tokens.end(), continuation.begin(), continuation.end());
  KvCache work;
  try {
    c10::InferenceMode guard;
    work.impl_ = prefix.impl_->Copy(prefix.impl_->len,
                                    prefix.impl_->len + static_cast<int64_t>(continuation.size()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model score: libtorch: ", e.what()));
  }
  return Extend(&work, tokens, /*all_logits=*/true);
}

absl::StatusOr<KvCache> LlamaModel::ImportF16(const KvCacheView& kv,
                                              absl::Span<const uint8_t> keep_mask) const {
  std::vector<std::vector<uint8_t>> masks;
  if (!keep_mask.empty()) masks.emplace_back(keep_mask.begin(), keep_mask.end());
  return ImportF16Batch(absl::MakeConstSpan(&kv, 1), masks);
}

absl::StatusOr<KvCache> LlamaModel::ImportF16Batch(
    absl::Span<const KvCacheView> kvs, absl::Span<const std::vector<uint8_t>> keep_masks) const {
  if (kvs.empty()) return absl::InvalidArgumentError("model: nothing to import");
  if (!keep_masks.empty() && keep_masks.size() != kvs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("model: ", keep_masks.size(), " keep masks for ",
                                                   kvs.size(), " sequences"));
  }
  const KvGeometry want = config_.KvGeometryFor(kvs[0].geom().tokens);
  for (const KvCacheView& kv : kvs) {
    if (kv.k.geom != want || kv.v.geom != want || kv.k.data == nullptr || kv.v.data == nullptr ||
        kv.k.dtype != kv.v.dtype) {
      return absl::InvalidArgumentError(absl::StrCat("model: imported KV ", kv.k.geom.ToString(),
                                                     " does not fit this model (want ",
                                                     want.ToString(), ")"));
    }
  }
  try {
    KvCache c = NewCache();
    c10::InferenceMode guard;
    KvCache::Impl& impl = *c.impl_;
    impl.batch = static_cast<int64_t>(kvs.size());
    const int64_t S = want.tokens;
    impl.Allocate(std::max<int64_t>(S, 1));
    const size_t n = static_cast<size_t>(want.layer_elements());
    std::vector<float> buf(n);
    for (int64_t b = 0; b < impl.batch; ++b) {
      for (int64_t l = 0; l < want.layers; ++l) {
        for (int which = 0; which < 2; ++which) {
          const KvTensorView& src = which == 0 ? kvs[b].k : kvs[b].v;
          if (src.dtype == DType::kBF16) {
            Bf16ToFloatN(src.layer(l), buf.data(), n);
          } else {
            HalfToFloatN(src.layer(l), buf.data(), n);
          }
          at::Tensor t = at::from_blob(buf.data(), {want.heads, S, want.head_dim},
                                       at::TensorOptions().dtype(at::kFloat));
          (which == 0 ? impl.k[l] : impl.v[l]).select(0, b).narrow(1, 0, S).copy_(t);
        }
      }
    }
    impl.len = S;
    for (size_t b = 0; b < keep_masks.size(); ++b) {
      KVS_RETURN_IF_ERROR(c.SetKeepMask(keep_masks[b], static_cast<int64_t>(b)));
    }
    return c;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("kv import: libtorch: ", e.what()));
  }
}

}  // namespace kvs
