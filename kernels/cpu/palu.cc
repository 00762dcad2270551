// PLACEHOLDER: replaced by the codec implementation.
#include "kernels/cpu/codecs.h"

namespace kvs {

std::unique_ptr<Codec> NewPaluLrCodec(const CodecOptions&) { return nullptr; }
std::unique_ptr<Codec> NewPaluInt4Codec(const CodecOptions&) { return nullptr; }

}  // namespace kvs
