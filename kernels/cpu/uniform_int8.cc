// uniform_int8 (CODECS.md §2.5): per-layer symmetric INT8, K and V separately.
// scale_l = max|x| over layer l / 127 (1.0 when 0); q = clip(rint(x / scale_l), -127, 127);
// decode q · scale_l -> fp16 (RNE). Same math as the KVShuttle reference; the per-layer scales,
// which the reference keeps in its JSON metadata, follow the codes in the body.
// Layout and size: kernels/format/uniform_int8.h. Quantiser: kernels/cpu/int8_layer.h.
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/codecs.h"
#include "kernels/cpu/int8_layer.h"
#include "kernels/format/uniform_int8.h"

namespace kvs {
namespace {

constexpr CodecInfo kInfo{CodecId::kUniformInt8, "uniform_int8", "quantization",
                          "per-layer symmetric INT8, K and V separately", /*lossy=*/true,
                          /*exact_size=*/true, /*prunes=*/false};

class UniformInt8Codec final : public CodecBase {
 public:
  explicit UniformInt8Codec(const CodecOptions& o) : CodecBase(kInfo, o) {}

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::UniformInt8BodyBytes(g);
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t>, ThreadPool* pool) const override {
    const KvGeometry& g = kv.geom();
    const int64_t n = g.elements();
    uint8_t* scales = body.data() + 2 * n;
    int8l::EncodeInt8Tensor(kv.k, body.data(), scales, options().path, pool);
    int8l::EncodeInt8Tensor(kv.v, body.data() + n, scales + 4 * g.layers, options().path, pool);
    return format::UniformInt8BodyBytes(g);
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t>, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    const KvGeometry& g = out.geom();
    const int64_t n = g.elements();
    const uint8_t* scales = body.data() + 2 * n;
    int8l::DecodeInt8Tensor(body.data(), scales, out.k, options().path, pool);
    int8l::DecodeInt8Tensor(body.data() + n, scales + 4 * g.layers, out.v, options().path, pool);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewUniformInt8Codec(const CodecOptions& o) {
  return std::make_unique<UniformInt8Codec>(o);
}

}  // namespace kvs
