// services/runner/gguf.cc — GGUF parsing, validation and dequantisation (no libtorch).
#include "services/runner/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/half/half.h"
#include "common/status/status.h"

namespace kvs {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kMaxDims = 4;             // GGML_MAX_DIMS
constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;

struct TypeTraits {
  uint32_t id;
  const char* name;
  int64_t block_elements;
  int64_t block_bytes;
};

// ggml type table (ggml.h / ggml.c type_traits). Ids 4, 5 and 31-33, 36-38 were removed upstream.
constexpr TypeTraits kTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},          {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},       {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},       {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},    {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},    {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98},  {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},   {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},          {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},         {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},        {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
};

const TypeTraits* FindType(uint32_t id) {
  for (const TypeTraits& t : kTypes) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

const char* ValueTypeName(uint32_t t) {
  static const char* const kNames[] = {"uint8", "int8",  "uint16", "int16",  "uint32",
                                       "int32", "float32", "bool", "string", "array",
                                       "uint64", "int64", "float64"};
  return t < 13 ? kNames[t] : "unknown";
}

// Bounds-checked little-endian cursor over the file image. Every read checks the remaining
// size first; errors name the offset and what was being read.
class Reader {
 public:
  Reader(const uint8_t* p, uint64_t size) : p_(p), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  template <typename T>
  absl::Status Read(T* out, absl::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what);
    std::memcpy(out, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status ReadString(std::string* out, absl::string_view what) {
    uint64_t n = 0;
    KVS_RETURN_IF_ERROR(Read(&n, what));
    if (n > remaining() || n > kMaxStringBytes) {
      return absl::DataLossError(absl::StrCat("gguf: ", what, " at offset ", pos_ - 8,
                                              " declares ", n, " bytes but only ", remaining(),
                                              " remain"));
    }
    out->assign(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return absl::OkStatus();
  }

  absl::Status Truncated(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat("gguf: file truncated at offset ", pos_,
                                            " while reading ", what, " (file size ", size_, ")"));
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// Smallest encoded size of one value of type t (used to bound array counts before reserving).
uint64_t MinValueBytes(uint32_t t) {
  switch (static_cast<GgufType>(t)) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
    case GgufType::kString:
      return 8;
    case GgufType::kArray:
      return 12;
  }
  return 1;
}

// Reads one scalar of type t; integers go to *i, floats to *f, strings to *s.
absl::Status ReadScalar(Reader& r, uint32_t t, int64_t* i, double* f, std::string* s,
                        absl::string_view what) {
  switch (static_cast<GgufType>(t)) {
    case GgufType::kUint8: {
      uint8_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kInt8: {
      int8_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kUint16: {
      uint16_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kInt16: {
      int16_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kUint32: {
      uint32_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kInt32: {
      int32_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kUint64: {
      uint64_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::DataLossError(absl::StrCat("gguf: ", what, " holds uint64 ", v,
                                                " above the supported range"));
      }
      *i = static_cast<int64_t>(v);
      return absl::OkStatus();
    }
    case GgufType::kInt64: {
      int64_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kBool: {
      uint8_t v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      if (v > 1) {
        return absl::DataLossError(absl::StrCat("gguf: ", what, " holds bool byte ", v));
      }
      *i = v;
      return absl::OkStatus();
    }
    case GgufType::kFloat32: {
      float v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *f = v;
      return absl::OkStatus();
    }
    case GgufType::kFloat64: {
      double v = 0;
      KVS_RETURN_IF_ERROR(r.Read(&v, what));
      *f = v;
      return absl::OkStatus();
    }
    case GgufType::kString:
      return r.ReadString(s, what);
    case GgufType::kArray:
      break;
  }
  return absl::DataLossError(absl::StrCat("gguf: ", what, " has unknown value type ", t));
}

absl::Status ReadValue(Reader& r, const std::string& key, GgufValue* v) {
  uint32_t t = 0;
  const std::string what = absl::StrCat("type of metadata key '", key, "'");
  KVS_RETURN_IF_ERROR(r.Read(&t, what));
  if (t > static_cast<uint32_t>(GgufType::kFloat64)) {
    return absl::DataLossError(
        absl::StrCat("gguf: metadata key '", key, "' has unknown value type ", t));
  }
  v->type = static_cast<GgufType>(t);
  const std::string vwhat = absl::StrCat("value of metadata key '", key, "'");
  if (v->type != GgufType::kArray) return ReadScalar(r, t, &v->i, &v->f, &v->s, vwhat);

  uint32_t et = 0;
  uint64_t n = 0;
  KVS_RETURN_IF_ERROR(r.Read(&et, vwhat));
  KVS_RETURN_IF_ERROR(r.Read(&n, vwhat));
  if (et > static_cast<uint32_t>(GgufType::kFloat64)) {
    return absl::DataLossError(absl::StrCat("gguf: array '", key, "' has unknown element type ", et));
  }
  if (et == static_cast<uint32_t>(GgufType::kArray)) {
    return absl::DataLossError(absl::StrCat("gguf: array '", key, "' nests arrays (unsupported)"));
  }
  if (n > r.remaining() / MinValueBytes(et)) {
    return absl::DataLossError(absl::StrCat("gguf: array '", key, "' declares ", n, " ",
                                            ValueTypeName(et), " elements but only ",
                                            r.remaining(), " bytes remain"));
  }
  v->elem_type = static_cast<GgufType>(et);
  const bool is_string = v->elem_type == GgufType::kString;
  const bool is_float = v->elem_type == GgufType::kFloat32 || v->elem_type == GgufType::kFloat64;
  if (is_string) {
    v->string_array.resize(n);
  } else if (is_float) {
    v->float_array.resize(n);
  } else {
    v->int_array.resize(n);
  }
  int64_t i = 0;
  double f = 0;
  std::string s;
  for (uint64_t k = 0; k < n; ++k) {
    KVS_RETURN_IF_ERROR(ReadScalar(r, et, &i, &f, is_string ? &v->string_array[k] : &s, vwhat));
    if (is_float) {
      v->float_array[k] = f;
    } else if (!is_string) {
      v->int_array[k] = i;
    }
  }
  return absl::OkStatus();
}

bool MulOverflows(int64_t a, int64_t b, int64_t* out) { return __builtin_mul_overflow(a, b, out); }

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (ggml's get_scale_min_k4).
void ScaleMinK4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace

std::string GgmlTypeName(uint32_t type) {
  const TypeTraits* t = FindType(type);
  return t ? std::string(t->name) : absl::StrCat("unknown(", type, ")");
}

bool GgmlTypeTraits(uint32_t type, int64_t* block_elements, int64_t* block_bytes) {
  const TypeTraits* t = FindType(type);
  if (t == nullptr) return false;
  *block_elements = t->block_elements;
  *block_bytes = t->block_bytes;
  return true;
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}

uint64_t GgufValue::array_size() const {
  if (type != GgufType::kArray) return 0;
  return string_array.size() + float_array.size() + int_array.size();
}

// Owns the bytes behind a GgufFile: an mmap'd file or an in-memory copy.
struct GgufFile::Storage {
  void* map = nullptr;
  size_t map_size = 0;
  std::vector<uint8_t> bytes;

  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (map != nullptr && map != MAP_FAILED) munmap(map, map_size);
  }
};

GgufFile::GgufFile() = default;
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

absl::StatusOr<GgufFile> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat("gguf: open ", path, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::UnavailableError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("gguf: fstat ", path, ": ", std::strerror(err)));
  }
  GgufFile f;
  f.storage_ = std::make_unique<Storage>();
  f.size_ = static_cast<uint64_t>(st.st_size);
  if (f.size_ > 0) {
    f.storage_->map = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f.storage_->map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::UnavailableError(absl::StrCat("gguf: mmap ", path, ": ", std::strerror(err)));
    }
    f.storage_->map_size = f.size_;
    f.data_ = static_cast<const uint8_t*>(f.storage_->map);
  }
  ::close(fd);
  absl::Status s = f.Parse();
  if (!s.ok()) return Annotate(s, path);
  return f;
}

absl::StatusOr<GgufFile> GgufFile::FromBytes(std::vector<uint8_t> bytes) {
  GgufFile f;
  f.storage_ = std::make_unique<Storage>();
  f.storage_->bytes = std::move(bytes);
  f.data_ = f.storage_->bytes.data();
  f.size_ = f.storage_->bytes.size();
  KVS_RETURN_IF_ERROR(f.Parse());
  return f;
}

absl::Status GgufFile::Parse() {
  Reader r(data_, size_);
  uint32_t magic = 0;
  KVS_RETURN_IF_ERROR(r.Read(&magic, "magic"));
  if (magic != kGgufMagic) {
    return absl::DataLossError(absl::StrCat("gguf: bad magic 0x", absl::Hex(magic),
                                            " (not a GGUF file)"));
  }
  KVS_RETURN_IF_ERROR(r.Read(&version_, "version"));
  if (version_ != 2 && version_ != 3) {
    return absl::UnimplementedError(
        absl::StrCat("gguf: version ", version_, " unsupported (want 2 or 3)"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  KVS_RETURN_IF_ERROR(r.Read(&n_tensors, "tensor count"));
  KVS_RETURN_IF_ERROR(r.Read(&n_kv, "metadata count"));
  // A metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor entry at
  // least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
  if (n_kv > r.remaining() / 13) {
    return absl::DataLossError(absl::StrCat("gguf: metadata count ", n_kv,
                                            " cannot fit in a file of ", size_, " bytes"));
  }
  if (n_tensors > r.remaining() / 32) {
    return absl::DataLossError(absl::StrCat("gguf: tensor count ", n_tensors,
                                            " cannot fit in a file of ", size_, " bytes"));
  }

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    KVS_RETURN_IF_ERROR(r.ReadString(&key, absl::StrCat("key of metadata entry ", k)));
    GgufValue v;
    KVS_RETURN_IF_ERROR(ReadValue(r, key, &v));
    if (metadata_.count(key) != 0) {
      return absl::DataLossError(absl::StrCat("gguf: duplicate metadata key '", key, "'"));
    }
    metadata_.emplace(std::move(key), std::move(v));
  }

  alignment_ = 32;
  if (const GgufValue* a = Find("general.alignment")) {
    if (a->type != GgufType::kUint32) {
      return absl::DataLossError("gguf: general.alignment must be a uint32");
    }
    if (a->i == 0 || (a->i & (a->i - 1)) != 0) {
      return absl::DataLossError(
          absl::StrCat("gguf: general.alignment ", a->i, " is not a power of two"));
    }
    alignment_ = static_cast<uint64_t>(a->i);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    KVS_RETURN_IF_ERROR(r.ReadString(&t.name, absl::StrCat("name of tensor ", k)));
    const std::string what = absl::StrCat("tensor '", t.name, "'");
    uint32_t n_dims = 0;
    KVS_RETURN_IF_ERROR(r.Read(&n_dims, what));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return absl::DataLossError(
          absl::StrCat("gguf: ", what, " has ", n_dims, " dimensions (want 1 to ", kMaxDims, ")"));
    }
    t.elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      KVS_RETURN_IF_ERROR(r.Read(&ne, what));
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::DataLossError(
            absl::StrCat("gguf: ", what, " has invalid dimension ", d, " = ", ne));
      }
      t.dims.push_back(static_cast<int64_t>(ne));
      if (MulOverflows(t.elements, static_cast<int64_t>(ne), &t.elements)) {
        return absl::DataLossError(absl::StrCat("gguf: ", what, " element count overflows"));
      }
    }
    KVS_RETURN_IF_ERROR(r.Read(&t.type, what));
    KVS_RETURN_IF_ERROR(r.Read(&t.offset, what));
    const TypeTraits* tt = FindType(t.type);
    if (tt == nullptr) {
      return absl::DataLossError(
          absl::StrCat("gguf: ", what, " has unknown ggml type ", t.type));
    }
    if (t.dims[0] % tt->block_elements != 0) {
      return absl::DataLossError(absl::StrCat("gguf: ", what, " row length ", t.dims[0],
                                              " is not a multiple of the ", tt->name,
                                              " block size ", tt->block_elements));
    }
    int64_t bytes = 0;
    if (MulOverflows(t.elements / tt->block_elements, tt->block_bytes, &bytes)) {
      return absl::DataLossError(absl::StrCat("gguf: ", what, " byte size overflows"));
    }
    t.bytes = static_cast<uint64_t>(bytes);
    if (t.offset % alignment_ != 0) {
      return absl::DataLossError(absl::StrCat("gguf: ", what, " offset ", t.offset,
                                              " is not a multiple of the alignment ",
                                              alignment_));
    }
    if (tensor_index_.count(t.name) != 0) {
      return absl::DataLossError(absl::StrCat("gguf: duplicate tensor '", t.name, "'"));
    }
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  const uint64_t header_end = r.pos();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_offset_ > size_) {
    return absl::DataLossError(absl::StrCat("gguf: file truncated: data section would start at ",
                                            data_offset_, " but the file has ", size_, " bytes"));
  }
  const uint64_t data_size = size_ >= data_offset_ ? size_ - data_offset_ : 0;
  for (const GgufTensorInfo& t : tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset) {
      return absl::DataLossError(absl::StrCat(
          "gguf: tensor '", t.name, "' (", GgmlTypeName(t.type), ", ", t.bytes,
          " bytes at data offset ", t.offset, ") extends past the end of the file (data section ",
          data_size, " bytes): file truncated?"));
    }
  }
  // Tensors must not overlap.
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const GgufTensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& a = *by_offset[i - 1];
    if (a.offset + a.bytes > by_offset[i]->offset) {
      return absl::DataLossError(absl::StrCat("gguf: tensors '", a.name, "' and '",
                                              by_offset[i]->name, "' overlap"));
    }
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(absl::string_view key) const {
  auto it = metadata_.find(std::string(key));
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {
absl::Status Missing(absl::string_view key) {
  return absl::NotFoundError(absl::StrCat("gguf: metadata key '", key, "' not found"));
}
absl::Status WrongType(absl::string_view key, const GgufValue& v, absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat("gguf: metadata key '", key, "' is ",
                                                 ValueTypeName(static_cast<uint32_t>(v.type)),
                                                 ", want ", want));
}
}  // namespace

absl::StatusOr<uint64_t> GgufFile::GetUint(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (!v->is_integer() || v->i < 0) return WrongType(key, *v, "a non-negative integer");
  return static_cast<uint64_t>(v->i);
}

absl::StatusOr<double> GgufFile::GetFloat(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->is_float()) return v->f;
  if (v->is_integer()) return static_cast<double>(v->i);
  return WrongType(key, *v, "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != GgufType::kBool) return WrongType(key, *v, "bool");
  return v->i != 0;
}

absl::StatusOr<std::string> GgufFile::GetString(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != GgufType::kString) return WrongType(key, *v, "string");
  return v->s;
}

absl::StatusOr<uint64_t> GgufFile::GetUintOr(absl::string_view key, uint64_t dflt) const {
  if (!Has(key)) return dflt;
  return GetUint(key);
}

absl::StatusOr<double> GgufFile::GetFloatOr(absl::string_view key, double dflt) const {
  if (!Has(key)) return dflt;
  return GetFloat(key);
}

absl::StatusOr<bool> GgufFile::GetBoolOr(absl::string_view key, bool dflt) const {
  if (!Has(key)) return dflt;
  return GetBool(key);
}

absl::StatusOr<const std::vector<std::string>*> GgufFile::GetStringArray(
    absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != GgufType::kArray || v->elem_type != GgufType::kString) {
    return WrongType(key, *v, "array of string");
  }
  return &v->string_array;
}

absl::StatusOr<const std::vector<double>*> GgufFile::GetFloatArray(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != GgufType::kArray ||
      (v->elem_type != GgufType::kFloat32 && v->elem_type != GgufType::kFloat64)) {
    return WrongType(key, *v, "array of float");
  }
  return &v->float_array;
}

absl::StatusOr<const std::vector<int64_t>*> GgufFile::GetIntArray(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != GgufType::kArray || v->elem_type == GgufType::kString ||
      v->elem_type == GgufType::kFloat32 || v->elem_type == GgufType::kFloat64) {
    return WrongType(key, *v, "array of integer");
  }
  return &v->int_array;
}

const GgufTensorInfo* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::Span<const uint8_t> GgufFile::TensorData(const GgufTensorInfo& t) const {
  return absl::MakeConstSpan(data_ + data_offset_ + t.offset, t.bytes);
}

absl::Status GgufFile::DequantizeF32(const GgufTensorInfo& t, absl::Span<float> out) const {
  if (static_cast<int64_t>(out.size()) != t.elements) {
    return absl::InvalidArgumentError(absl::StrCat("gguf: tensor '", t.name, "' has ", t.elements,
                                                   " elements, output holds ", out.size()));
  }
  return Annotate(DequantizeGgml(t.type, TensorData(t), t.elements, out.data()),
                  absl::StrCat("tensor '", t.name, "'"));
}

absl::StatusOr<std::vector<float>> GgufFile::ReadF32(absl::string_view name,
                                                     const std::vector<int64_t>& want_dims) const {
  const GgufTensorInfo* t = FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("gguf: tensor '", name, "' not found"));
  }
  if (!want_dims.empty() && t->dims != want_dims) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gguf: tensor '", name, "' has dims {", absl::StrJoin(t->dims, ","), "}, want {",
        absl::StrJoin(want_dims, ","), "}"));
  }
  std::vector<float> out(t->elements);
  KVS_RETURN_IF_ERROR(DequantizeF32(*t, absl::MakeSpan(out)));
  return out;
}

absl::Status DequantizeGgml(uint32_t type, absl::Span<const uint8_t> src, int64_t n, float* out) {
  const TypeTraits* tt = FindType(type);
  if (tt == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown ggml type ", type));
  if (n < 0 || n % tt->block_elements != 0 ||
      static_cast<uint64_t>(n / tt->block_elements * tt->block_bytes) != src.size()) {
    return absl::InvalidArgumentError(absl::StrCat("dequantize ", tt->name, ": ", n,
                                                   " elements do not match ", src.size(),
                                                   " bytes"));
  }
  const uint8_t* p = src.data();
  const int64_t blocks = n / tt->block_elements;
  auto f16 = [](const uint8_t* q) {
    uint16_t h;
    std::memcpy(&h, q, 2);
    return HalfToFloat(h);
  };
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32:
      std::memcpy(out, p, n * sizeof(float));
      return absl::OkStatus();
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = f16(p + 2 * i);
      return absl::OkStatus();
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        out[i] = Bf16ToFloat(b);
      }
      return absl::OkStatus();
    case GgmlType::kQ4_0:  // {fp16 d; u8 qs[16]}: x = d * (q - 8)
      for (int64_t b = 0; b < blocks; ++b, p += 18, out += 32) {
        const float d = f16(p);
        for (int j = 0; j < 16; ++j) {
          out[j] = d * static_cast<float>((p[2 + j] & 0x0F) - 8);
          out[j + 16] = d * static_cast<float>((p[2 + j] >> 4) - 8);
        }
      }
      return absl::OkStatus();
    case GgmlType::kQ4_1:  // {fp16 d, m; u8 qs[16]}: x = d * q + m
      for (int64_t b = 0; b < blocks; ++b, p += 20, out += 32) {
        const float d = f16(p), m = f16(p + 2);
        for (int j = 0; j < 16; ++j) {
          out[j] = d * static_cast<float>(p[4 + j] & 0x0F) + m;
          out[j + 16] = d * static_cast<float>(p[4 + j] >> 4) + m;
        }
      }
      return absl::OkStatus();
    case GgmlType::kQ5_0:  // {fp16 d; u32 qh; u8 qs[16]}: x = d * (q5 - 16)
      for (int64_t b = 0; b < blocks; ++b, p += 22, out += 32) {
        const float d = f16(p);
        uint32_t qh;
        std::memcpy(&qh, p + 2, 4);
        for (int j = 0; j < 16; ++j) {
          const int h0 = ((qh >> j) << 4) & 0x10;
          const int h1 = (qh >> (j + 12)) & 0x10;
          out[j] = d * static_cast<float>(((p[6 + j] & 0x0F) | h0) - 16);
          out[j + 16] = d * static_cast<float>(((p[6 + j] >> 4) | h1) - 16);
        }
      }
      return absl::OkStatus();
    case GgmlType::kQ5_1:  // {fp16 d, m; u32 qh; u8 qs[16]}: x = d * q5 + m
      for (int64_t b = 0; b < blocks; ++b, p += 24, out += 32) {
        const float d = f16(p), m = f16(p + 2);
        uint32_t qh;
        std::memcpy(&qh, p + 4, 4);
        for (int j = 0; j < 16; ++j) {
          const int h0 = ((qh >> j) << 4) & 0x10;
          const int h1 = (qh >> (j + 12)) & 0x10;
          out[j] = d * static_cast<float>((p[8 + j] & 0x0F) | h0) + m;
          out[j + 16] = d * static_cast<float>((p[8 + j] >> 4) | h1) + m;
        }
      }
      return absl::OkStatus();
    case GgmlType::kQ8_0:  // {fp16 d; i8 qs[32]}: x = d * q
      for (int64_t b = 0; b < blocks; ++b, p += 34, out += 32) {
        const float d = f16(p);
        for (int j = 0; j < 32; ++j) out[j] = d * static_cast<float>(static_cast<int8_t>(p[2 + j]));
      }
      return absl::OkStatus();
    case GgmlType::kQ4_K:  // {fp16 d, dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32
    case GgmlType::kQ5_K:  // {fp16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}
      for (int64_t b = 0; b < blocks; ++b, p += tt->block_bytes, out += 256) {
        const bool five = type == static_cast<uint32_t>(GgmlType::kQ5_K);
        const float d = f16(p), dmin = f16(p + 2);
        const uint8_t* scales = p + 4;
        const uint8_t* qh = p + 16;
        const uint8_t* qs = p + (five ? 48 : 16);
        for (int j = 0; j < 8; ++j) {  // sub-block j: nibble (j % 2) of qs[32 * (j / 2) + l]
          int sc, m;
          ScaleMinK4(j, scales, &sc, &m);
          const float dj = d * static_cast<float>(sc), mj = dmin * static_cast<float>(m);
          for (int l = 0; l < 32; ++l) {
            int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
            if (five) q |= ((qh[l] >> j) & 1) << 4;
            out[32 * j + l] = dj * static_cast<float>(q) - mj;
          }
        }
      }
      return absl::OkStatus();
    case GgmlType::kQ6_K:  // {u8 ql[128]; u8 qh[64]; i8 scales[16]; fp16 d}: 16 sub-blocks of 16
      for (int64_t b = 0; b < blocks; ++b, p += 210, out += 256) {
        const uint8_t* ql = p;
        const uint8_t* qh = p + 128;
        const int8_t* scales = reinterpret_cast<const int8_t*>(p + 192);
        const float d = f16(p + 208);
        for (int i = 0; i < 256; ++i) {
          const int h = i / 128, r = i % 128;
          const int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
          const int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
          out[i] = d * static_cast<float>(scales[i / 16]) * static_cast<float>((lo | (hi << 4)) - 32);
        }
      }
      return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrCat("ggml type ", tt->name, " (", type, ") cannot be dequantised by this reader "
                   "(supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)"));
}

}  // namespace kvs
