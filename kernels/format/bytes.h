// kernels/format/bytes.h — bounds-checked little-endian cursors over payload bodies.
//
// ByteWriter writes into a buffer whose size the codec computed exactly beforehand; running past
// the end is a codec bug, reported as an Internal error by Finish(). ByteReader is for untrusted
// bytes: every Take/Get is checked and a short read is an InvalidArgument ("truncated").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace kvs {

class ByteWriter {
 public:
  explicit ByteWriter(absl::Span<uint8_t> out) : out_(out) {}

  // Returns a pointer to the next n bytes and advances, or nullptr (and records overflow).
  uint8_t* Take(size_t n) {
    if (n > out_.size() - pos_) {
      overflow_ = true;
      return nullptr;
    }
    uint8_t* p = out_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  void Put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (uint8_t* p = Take(sizeof(T))) std::memcpy(p, &v, sizeof(T));
  }
  void PutBytes(const void* src, size_t n) {
    if (uint8_t* p = Take(n)) std::memcpy(p, src, n);
  }

  size_t written() const { return pos_; }
  // Bytes written, or Internal when a write ran past the end.
  absl::StatusOr<size_t> Finish() const {
    if (overflow_) return absl::InternalError("codec wrote past its computed payload size");
    return pos_;
  }

 private:
  absl::Span<uint8_t> out_;
  size_t pos_ = 0;
  bool overflow_ = false;
};

class ByteReader {
 public:
  explicit ByteReader(absl::Span<const uint8_t> in) : in_(in) {}

  absl::StatusOr<const uint8_t*> Take(size_t n, absl::string_view what) {
    if (n > in_.size() - pos_) {
      return absl::InvalidArgumentError(absl::StrCat("payload truncated: ", what, " needs ", n,
                                                     " bytes, ", in_.size() - pos_, " left"));
    }
    const uint8_t* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  absl::StatusOr<T> Get(absl::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    auto p = Take(sizeof(T), what);
    if (!p.ok()) return p.status();
    T v;
    std::memcpy(&v, *p, sizeof(T));
    return v;
  }
  size_t remaining() const { return in_.size() - pos_; }
  // InvalidArgument when bytes are left over.
  absl::Status ExpectEnd() const {
    if (pos_ != in_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("payload has ", in_.size() - pos_, " unexpected trailing bytes"));
    }
    return absl::OkStatus();
  }

 private:
  absl::Span<const uint8_t> in_;
  size_t pos_ = 0;
};

// Unaligned little-endian float access into payload sections.
inline float LoadF32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void StoreF32(uint8_t* p, float v) { std::memcpy(p, &v, 4); }
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void StoreU32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

}  // namespace kvs
