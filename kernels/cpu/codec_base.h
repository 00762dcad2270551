// kernels/cpu/codec_base.h — internal: the shared frame of every CPU codec.
//
// CodecBase writes and validates the 32-byte payload header (kernels/format/payload.h) so that a
// codec implements only its body: MaxBodyBytes (exact for fixed-size codecs), EncodeBody and
// DecodeBody. Decode checks magic, version, codec id, dtype, geometry == the output's geometry,
// body length (== MaxBodyBytes for exact-size codecs, <= for the others) before DecodeBody runs,
// and pre-fills keep_mask with ones.
#pragma once

#include <cstdint>

#include "kernels/codec.h"
#include "kernels/format/bytes.h"
#include "kernels/format/payload.h"

namespace kvs {

class CodecBase : public Codec {
 public:
  CodecBase(const CodecInfo& info, const CodecOptions& options) : Codec(options), info_(info) {}

  const CodecInfo& info() const final { return info_; }
  absl::Status CanEncode(const KvGeometry& g) const override;
  absl::StatusOr<size_t> MaxEncodedBytes(const KvGeometry& g) const final;
  absl::StatusOr<size_t> Encode(const KvCacheView& kv, absl::Span<uint8_t> out,
                                absl::Span<uint8_t> workspace, ThreadPool* pool) const final;
  absl::Status Decode(absl::Span<const uint8_t> payload, const MutableKvCacheView& out,
                      absl::Span<uint8_t> workspace, ThreadPool* pool,
                      absl::Span<uint8_t> keep_mask) const final;

 protected:
  // Header flags this encoder writes (kFlag* bits).
  virtual uint8_t EncodeFlags() const { return 0; }
  // Whether lossy math on this codec accepts bf16 input (default: fp16 only).
  virtual bool AcceptsBf16() const { return false; }
  virtual absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const = 0;
  // Writes the body into `body` (size >= MaxBodyBytes) and returns its length.
  virtual absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                            absl::Span<uint8_t> workspace,
                                            ThreadPool* pool) const = 0;
  // `flags` are the payload's header flags (the encoder's choice, which decode follows).
  virtual absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t flags,
                                  const MutableKvCacheView& out, absl::Span<uint8_t> workspace,
                                  ThreadPool* pool, absl::Span<uint8_t> keep_mask) const = 0;

 private:
  CodecInfo info_;
};

}  // namespace kvs
