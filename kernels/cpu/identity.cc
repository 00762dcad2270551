// identity (baseline): the fp16 K and V bytes as they are. Accepts fp16 and bf16.
#include <cstring>

#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/codecs.h"
#include "kernels/format/identity.h"

namespace kvs {
namespace {

constexpr CodecInfo kInfo{CodecId::kIdentity, "identity", "baseline",
                          "raw fp16 K and V bytes, no compression", /*lossy=*/false,
                          /*exact_size=*/true, /*prunes=*/false};

// Copies n bytes using the pool: large copies are memory-bound and gain from two threads.
void ParallelCopy(uint8_t* dst, const uint8_t* src, size_t n, ThreadPool* pool) {
  constexpr int64_t kBlock = 1 << 20;
  const int64_t blocks = static_cast<int64_t>((n + kBlock - 1) / kBlock);
  ParallelFor(pool, blocks, [&](int64_t b, int64_t e) {
    const size_t begin = static_cast<size_t>(b) * kBlock;
    const size_t end = std::min(n, static_cast<size_t>(e) * kBlock);
    std::memcpy(dst + begin, src + begin, end - begin);
  });
}

class IdentityCodec final : public CodecBase {
 public:
  explicit IdentityCodec(const CodecOptions& o) : CodecBase(kInfo, o) {}

 protected:
  bool AcceptsBf16() const override { return true; }
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::IdentityBodyBytes(g);
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t>, ThreadPool* pool) const override {
    const size_t half = 2 * static_cast<size_t>(kv.geom().elements());
    ParallelCopy(body.data(), reinterpret_cast<const uint8_t*>(kv.k.data), half, pool);
    ParallelCopy(body.data() + half, reinterpret_cast<const uint8_t*>(kv.v.data), half, pool);
    return 2 * half;
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t>, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    const size_t half = 2 * static_cast<size_t>(out.geom().elements());
    ParallelCopy(reinterpret_cast<uint8_t*>(out.k.data), body.data(), half, pool);
    ParallelCopy(reinterpret_cast<uint8_t*>(out.v.data), body.data() + half, half, pool);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewIdentityCodec(const CodecOptions& o) {
  return std::make_unique<IdentityCodec>(o);
}

}  // namespace kvs
