// tests/unit/services/runner/gguf_builder.h — test-only: writes small GGUF v3 images.
//
//   GgufBuilder b;
//   b.KvString("tokenizer.ggml.model", "gpt2").KvStrings("tokenizer.ggml.tokens", {"a", "b"});
//   b.Tensor("w", {4}, /*F32*/ 0, 0);
//   std::vector<uint8_t> bytes = b.Build(data);
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace kvs::testing {

class GgufBuilder {
 public:
  explicit GgufBuilder(uint32_t version = 3) {
    Append(&head_, uint32_t{0x46554747});
    Append(&head_, version);
  }

  GgufBuilder& KvU32(const std::string& key, uint32_t v) { return Scalar(key, 4, v); }
  GgufBuilder& KvF32(const std::string& key, float v) { return Scalar(key, 6, v); }
  GgufBuilder& KvBool(const std::string& key, bool v) { return Scalar(key, 7, static_cast<uint8_t>(v)); }
  GgufBuilder& KvString(const std::string& key, const std::string& v) {
    PutString(&kv_, key);
    Append(&kv_, uint32_t{8});
    PutString(&kv_, v);
    ++n_kv_;
    return *this;
  }
  GgufBuilder& KvStrings(const std::string& key, const std::vector<std::string>& v) {
    ArrayHeader(key, 8, v.size());
    for (const std::string& s : v) PutString(&kv_, s);
    return *this;
  }
  GgufBuilder& KvF32s(const std::string& key, const std::vector<float>& v) {
    ArrayHeader(key, 6, v.size());
    for (float f : v) Append(&kv_, f);
    return *this;
  }
  GgufBuilder& KvI32s(const std::string& key, const std::vector<int32_t>& v) {
    ArrayHeader(key, 5, v.size());
    for (int32_t i : v) Append(&kv_, i);
    return *this;
  }
  GgufBuilder& Tensor(const std::string& name, const std::vector<uint64_t>& dims, uint32_t type,
                      uint64_t offset) {
    PutString(&ti_, name);
    Append(&ti_, static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) Append(&ti_, d);
    Append(&ti_, type);
    Append(&ti_, offset);
    ++n_tensors_;
    return *this;
  }
  std::vector<uint8_t> Build(const std::vector<uint8_t>& data = {}, uint64_t alignment = 32) const {
    std::vector<uint8_t> out = head_;
    Append(&out, n_tensors_);
    Append(&out, n_kv_);
    out.insert(out.end(), kv_.begin(), kv_.end());
    out.insert(out.end(), ti_.begin(), ti_.end());
    out.resize((out.size() + alignment - 1) / alignment * alignment);
    out.insert(out.end(), data.begin(), data.end());
    return out;
  }

 private:
  template <typename T>
  static void Append(std::vector<uint8_t>* out, T v) {
    const size_t n = out->size();
    out->resize(n + sizeof(T));
    std::memcpy(out->data() + n, &v, sizeof(T));
  }
  static void PutString(std::vector<uint8_t>* out, const std::string& s) {
    Append(out, static_cast<uint64_t>(s.size()));
    out->insert(out->end(), s.begin(), s.end());
  }
  template <typename T>
  GgufBuilder& Scalar(const std::string& key, uint32_t type, T v) {
    PutString(&kv_, key);
    Append(&kv_, type);
    Append(&kv_, v);
    ++n_kv_;
    return *this;
  }
  void ArrayHeader(const std::string& key, uint32_t elem_type, size_t n) {
    PutString(&kv_, key);
    Append(&kv_, uint32_t{9});
    Append(&kv_, elem_type);
    Append(&kv_, static_cast<uint64_t>(n));
    ++n_kv_;
  }

  std::vector<uint8_t> head_, kv_, ti_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
};

}  // namespace kvs::testing
