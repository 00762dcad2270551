// PLACEHOLDER: replaced by the codec implementation.
#include "kernels/cpu/codecs.h"

namespace kvs {

std::unique_ptr<Codec> NewKvquant2BitCodec(const CodecOptions&) { return nullptr; }

}  // namespace kvs
