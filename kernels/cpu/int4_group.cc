// PLACEHOLDER: replaced by the implementation.
#include "kernels/cpu/int4_group.h"

namespace kvs::int4g {
void EncodeF16(const uint16_t*, int64_t, uint8_t*, uint8_t*, uint8_t*, CodecPath, ThreadPool*) {}
void EncodeF32(const float*, int64_t, uint8_t*, uint8_t*, uint8_t*, CodecPath, ThreadPool*) {}
void DecodeF16(const uint8_t*, const uint8_t*, const uint8_t*, int64_t, uint16_t*, CodecPath, ThreadPool*) {}
}  // namespace kvs::int4g
