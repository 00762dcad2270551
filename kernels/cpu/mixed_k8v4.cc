// mixed_k8v4 (CODECS.md §2.14): keys as uniform_int8 (per-layer symmetric INT8), values as
// uniform_int4 (groups of 128, asymmetric). Same math and data layout as the KVShuttle reference;
// the K per-layer scales, which the reference keeps in its JSON metadata, end the body.
// Layout and size: kernels/format/mixed_k8v4.h.
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/codecs.h"
#include "kernels/cpu/int4_group.h"
#include "kernels/cpu/int8_layer.h"
#include "kernels/format/mixed_k8v4.h"

namespace kvs {
namespace {

constexpr CodecInfo kInfo{CodecId::kMixedK8V4, "mixed_k8v4", "hybrid",
                          "keys per-layer INT8, values grouped INT4", /*lossy=*/true,
                          /*exact_size=*/true, /*prunes=*/false};

// Section offsets of the body for n elements per tensor.
struct Sections {
  explicit Sections(int64_t n) : n(n), packed(int4g::PackedBytes(n)), groups(int4g::Groups(n)) {}
  int64_t n, packed, groups;
  int64_t v_packed() const { return n; }
  int64_t v_scales() const { return n + packed; }
  int64_t v_zeros() const { return n + packed + 4 * groups; }
  int64_t k_scales() const { return n + packed + 8 * groups; }
};

class MixedK8V4Codec final : public CodecBase {
 public:
  explicit MixedK8V4Codec(const CodecOptions& o) : CodecBase(kInfo, o) {}

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::MixedK8V4BodyBytes(g);
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t>, ThreadPool* pool) const override {
    const Sections s(kv.geom().elements());
    uint8_t* b = body.data();
    int8l::EncodeInt8Tensor(kv.k, b, b + s.k_scales(), options().path, pool);
    int4g::EncodeF16(kv.v.data, s.n, b + s.v_packed(), b + s.v_scales(), b + s.v_zeros(),
                     options().path, pool);
    return format::MixedK8V4BodyBytes(kv.geom());
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t>, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    const Sections s(out.geom().elements());
    const uint8_t* b = body.data();
    int8l::DecodeInt8Tensor(b, b + s.k_scales(), out.k, options().path, pool);
    int4g::DecodeF16(b + s.v_packed(), b + s.v_scales(), b + s.v_zeros(), s.n, out.v.data,
                     options().path, pool);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewMixedK8V4Codec(const CodecOptions& o) {
  return std::make_unique<MixedK8V4Codec>(o);
}

}  // namespace kvs
