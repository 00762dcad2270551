// PLACEHOLDER: replaced by the codec implementation.
#include "kernels/cpu/codecs.h"

namespace kvs {

std::unique_ptr<Codec> NewTopkPrune50Codec(const CodecOptions&) { return nullptr; }
std::unique_ptr<Codec> NewCascadePrune50Int4Codec(const CodecOptions&) { return nullptr; }

}  // namespace kvs
