// kernels/cpu/codecs.h — internal: factories of the 14 CPU codecs, one per codec source file.
// The registry (kernels/registry.cc) is the only caller; everyone else goes through
// CodecRegistry. Each codec's payload layout and closed-form size are in kernels/format/<name>.h.
#pragma once

#include <memory>

#include "kernels/codec.h"

namespace kvs {

std::unique_ptr<Codec> NewIdentityCodec(const CodecOptions& options);
std::unique_ptr<Codec> NewLosslessZstdCodec(const CodecOptions& options);
std::unique_ptr<Codec> NewLosslessLz4Codec(const CodecOptions& options);
std::unique_ptr<Codec> NewFp8E4m3Codec(const CodecOptions& options);
std::unique_ptr<Codec> NewUniformInt8Codec(const CodecOptions& options);
std::unique_ptr<Codec> NewUniformInt4Codec(const CodecOptions& options);
std::unique_ptr<Codec> NewKivi2BitCodec(const CodecOptions& options);
std::unique_ptr<Codec> NewKvquant2BitCodec(const CodecOptions& options);
std::unique_ptr<Codec> NewCachegenCodec(const CodecOptions& options);
std::unique_ptr<Codec> NewPaluLrCodec(const CodecOptions& options);
std::unique_ptr<Codec> NewTopkPrune50Codec(const CodecOptions& options);
std::unique_ptr<Codec> NewCascadePrune50Int4Codec(const CodecOptions& options);
std::unique_ptr<Codec> NewPaluInt4Codec(const CodecOptions& options);
std::unique_ptr<Codec> NewMixedK8V4Codec(const CodecOptions& options);

}  // namespace kvs
