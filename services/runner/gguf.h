// services/runner/gguf.h — a validating reader for GGUF model files (versions 2 and 3).
//
// A GGUF file is a header (magic "GGUF", version, counts), a list of typed metadata key/values
// (scalars, strings, arrays), a tensor table (name, dims fastest-first, ggml type, offset) and an
// aligned data section. Open() checks every count, length, offset and size against the file
// before anything is used, so a truncated or corrupt file is a DataLoss error, never a crash.
// The tensor bytes stay memory-mapped; DequantizeF32() expands one tensor to fp32.
//
//   KVS_ASSIGN_OR_RETURN(kvs::GgufFile f, kvs::GgufFile::Open("stories260K.gguf"));
//   KVS_ASSIGN_OR_RETURN(uint64_t layers, f.GetUint("llama.block_count"));
//   const kvs::GgufTensorInfo* t = f.FindTensor("token_embd.weight");   // dims {64, 512}
//   std::vector<float> w(t->elements);
//   KVS_RETURN_IF_ERROR(f.DequantizeF32(*t, absl::MakeSpan(w)));        // row-major [512][64]
//
// Dequantised types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the K-quants Q4_K, Q5_K,
// Q6_K (the types of Q4_K_M / Q5_K_M files). Every other ggml type whose
// block size is known is accepted by Open() (its size is validated) and reported as
// Unimplemented by DequantizeF32(); an unknown type id is a DataLoss error at Open().
//
// Thread-safety: a GgufFile is immutable after Open(); all const methods may run concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvs {

// Metadata value types, as numbered by the GGUF specification.
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// ggml tensor types this reader dequantises (ids as in ggml.h; others are kept as raw ids).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

// "F32", "Q4_1", ..., or "unknown(<id>)".
std::string GgmlTypeName(uint32_t type);
// Elements per block and bytes per block of a ggml type; false when the id is unknown.
bool GgmlTypeTraits(uint32_t type, int64_t* block_elements, int64_t* block_bytes);

// One metadata value. Scalars live in the field matching their type family; arrays of scalars
// in int_array/float_array (every integer and bool type widened to int64, every float type to
// double) and arrays of strings in string_array. Nested arrays are rejected by Open().
struct GgufValue {
  GgufType type = GgufType::kUint8;
  GgufType elem_type = GgufType::kUint8;  // arrays only
  int64_t i = 0;                          // all integer types and bool (uint64 above 2^63-1: rejected)
  double f = 0;                           // float32/float64
  std::string s;                          // string
  std::vector<int64_t> int_array;
  std::vector<double> float_array;
  std::vector<std::string> string_array;

  bool is_integer() const;
  bool is_float() const { return type == GgufType::kFloat32 || type == GgufType::kFloat64; }
  uint64_t array_size() const;  // 0 for scalars
};

// One entry of the tensor table, validated against the file.
struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ne0 first (fastest varying): a matrix [out][in] is {in, out}
  uint32_t type = 0;          // ggml type id
  uint64_t offset = 0;        // relative to the data section, multiple of the alignment
  uint64_t bytes = 0;         // size of the tensor data
  int64_t elements = 0;

  int64_t rows() const { return dims.empty() ? 0 : elements / dims[0]; }
};

class GgufFile {
 public:
  // Maps `path` read-only and parses it. Errors: NotFound/PermissionDenied from open(2),
  // DataLoss for malformed or truncated content, Unimplemented for an unsupported version.
  static absl::StatusOr<GgufFile> Open(const std::string& path);
  // Parses a file image held in memory (tests, fuzzing).
  static absl::StatusOr<GgufFile> FromBytes(std::vector<uint8_t> bytes);

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  ~GgufFile();

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  uint64_t file_size() const { return size_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* Find(absl::string_view key) const;
  bool Has(absl::string_view key) const { return Find(key) != nullptr; }

  // Typed getters: NotFound when absent, InvalidArgument when the stored type does not fit
  // (GetUint accepts any non-negative integer, GetFloat any integer or float).
  absl::StatusOr<uint64_t> GetUint(absl::string_view key) const;
  absl::StatusOr<double> GetFloat(absl::string_view key) const;
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<std::string> GetString(absl::string_view key) const;
  // Absent means `dflt`; present with the wrong type is an error (no silent fallback).
  absl::StatusOr<uint64_t> GetUintOr(absl::string_view key, uint64_t dflt) const;
  absl::StatusOr<double> GetFloatOr(absl::string_view key, double dflt) const;
  absl::StatusOr<bool> GetBoolOr(absl::string_view key, bool dflt) const;
  // Arrays: the pointee lives as long as this file.
  absl::StatusOr<const std::vector<std::string>*> GetStringArray(absl::string_view key) const;
  absl::StatusOr<const std::vector<double>*> GetFloatArray(absl::string_view key) const;
  absl::StatusOr<const std::vector<int64_t>*> GetIntArray(absl::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(absl::string_view name) const;
  // The raw bytes of a tensor (validated at Open()).
  absl::Span<const uint8_t> TensorData(const GgufTensorInfo& t) const;
  // Expands `t` to fp32 into `out` (exactly t.elements floats). Unimplemented for types this
  // reader does not dequantise.
  absl::Status DequantizeF32(const GgufTensorInfo& t, absl::Span<float> out) const;
  // Looks `name` up, checks its dims equal `want_dims` (ne0 first) when given, and dequantises.
  absl::StatusOr<std::vector<float>> ReadF32(absl::string_view name,
                                             const std::vector<int64_t>& want_dims = {}) const;

 private:
  struct Storage;
  GgufFile();
  absl::Status Parse();

  std::unique_ptr<Storage> storage_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Dequantises `n` elements of ggml type `type` from `src` (exactly the bytes of n elements).
// n must be a multiple of the type's block size.
absl::Status DequantizeGgml(uint32_t type, absl::Span<const uint8_t> src, int64_t n, float* out);

}  // namespace kvs
