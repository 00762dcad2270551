// common/tensor/kv.h — KV-cache geometry and non-owning tensor views.
//
// A request's KV cache is K and V, each [L, H, S, D] = (layers, KV heads, tokens, head dim),
// row-major with D fastest, stored as 16-bit floats (fp16 by default, bf16 where the model is
// bf16). Views never own memory.
//
//   kvs::KvGeometry g{32, 8, 1024, 128};
//   kvs::KvCacheView kv{kvs::KvTensorView{k_ptr, g}, kvs::KvTensorView{v_ptr, g}};
//   kvs::KvCacheView layer3 = kv.Layers(3, 4);   // a one-layer chunk, still [1, H, S, D]
#pragma once

#include "absl/strings/string_view.h"
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kvs {

enum class DType : uint8_t { kF16 = 1, kBF16 = 2 };

absl::string_view DTypeName(DType d);

struct KvGeometry {
  int64_t layers = 0;    // L
  int64_t heads = 0;     // H (KV heads)
  int64_t tokens = 0;    // S
  int64_t head_dim = 0;  // D

  int64_t elements() const { return layers * heads * tokens * head_dim; }  // per tensor
  int64_t layer_elements() const { return heads * tokens * head_dim; }
  int64_t slice_elements() const { return tokens * head_dim; }  // one (layer, head)
  // Bytes of K plus V at 16 bits per element: the "original size" every ratio divides.
  int64_t raw_bytes() const { return 4 * elements(); }

  KvGeometry WithLayers(int64_t l) const { return {l, heads, tokens, head_dim}; }
  std::string ToString() const;
  friend bool operator==(const KvGeometry& a, const KvGeometry& b) {
    return a.layers == b.layers && a.heads == b.heads && a.tokens == b.tokens &&
           a.head_dim == b.head_dim;
  }
  friend bool operator!=(const KvGeometry& a, const KvGeometry& b) { return !(a == b); }
};

// Every dimension in [1, 2^24] and the element count of one tensor below 2^40: the limits a
// payload header can carry and a codec will accept.
absl::Status ValidateGeometry(const KvGeometry& g);

// Read-only view of one [L, H, S, D] tensor of 16-bit floats.
struct KvTensorView {
  const uint16_t* data = nullptr;
  KvGeometry geom;
  DType dtype = DType::kF16;

  const uint16_t* layer(int64_t l) const { return data + l * geom.layer_elements(); }
  const uint16_t* slice(int64_t l, int64_t h) const {
    return data + (l * geom.heads + h) * geom.slice_elements();
  }
  KvTensorView Layers(int64_t begin, int64_t end) const {
    return {layer(begin), geom.WithLayers(end - begin), dtype};
  }
};

// Writable view of one [L, H, S, D] tensor of 16-bit floats.
struct MutableKvTensorView {
  uint16_t* data = nullptr;
  KvGeometry geom;
  DType dtype = DType::kF16;

  uint16_t* layer(int64_t l) const { return data + l * geom.layer_elements(); }
  uint16_t* slice(int64_t l, int64_t h) const {
    return data + (l * geom.heads + h) * geom.slice_elements();
  }
  MutableKvTensorView Layers(int64_t begin, int64_t end) const {
    return {layer(begin), geom.WithLayers(end - begin), dtype};
  }
  operator KvTensorView() const { return {data, geom, dtype}; }
};

// K and V of one request (or one chunk of layers of it). K and V share the geometry.
struct KvCacheView {
  KvTensorView k;
  KvTensorView v;
  const KvGeometry& geom() const { return k.geom; }
  KvCacheView Layers(int64_t begin, int64_t end) const {
    return {k.Layers(begin, end), v.Layers(begin, end)};
  }
};

struct MutableKvCacheView {
  MutableKvTensorView k;
  MutableKvTensorView v;
  const KvGeometry& geom() const { return k.geom; }
  MutableKvCacheView Layers(int64_t begin, int64_t end) const {
    return {k.Layers(begin, end), v.Layers(begin, end)};
  }
  operator KvCacheView() const { return {k, v}; }
};

// Checks that both tensors are non-null, fp16 or bf16 alike, and share a valid geometry.
absl::Status ValidateKv(const KvCacheView& kv);
absl::Status ValidateKv(const MutableKvCacheView& kv);

}  // namespace kvs
