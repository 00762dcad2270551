// uniform_int4 (CODECS.md §2.6): grouped asymmetric INT4. Each tensor is flattened in [L,H,S,D]
// order, zero-padded to a multiple of 128 and cut into groups of 128 (with D = 128, one group per
// token vector); per group scale = (max - min) / 15, zero = min (scale 1 when max == min),
// q = clip(rint((x - zero) / scale), 0, 15), packed two per byte high nibble first; decode
// q · scale + zero -> fp16. Same math and byte layout as the KVShuttle reference.
// Layout and size: kernels/format/uniform_int4.h. Quantiser: kernels/cpu/int4_group.h.
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/codecs.h"
#include "kernels/cpu/int4_group.h"
#include "kernels/format/uniform_int4.h"

namespace kvs {
namespace {

constexpr CodecInfo kInfo{CodecId::kUniformInt4, "uniform_int4", "quantization",
                          "grouped (128) asymmetric INT4, K and V separately", /*lossy=*/true,
                          /*exact_size=*/true, /*prunes=*/false};

static_assert(format::kInt4Group == static_cast<uint64_t>(int4g::kGroup));

// Section offsets of the body for n elements per tensor.
struct Sections {
  explicit Sections(int64_t n) : packed(int4g::PackedBytes(n)), groups(int4g::Groups(n)) {}
  int64_t packed, groups;
  int64_t k_packed() const { return 0; }
  int64_t v_packed() const { return packed; }
  int64_t k_scales() const { return 2 * packed; }
  int64_t v_scales() const { return 2 * packed + 4 * groups; }
  int64_t k_zeros() const { return 2 * packed + 8 * groups; }
  int64_t v_zeros() const { return 2 * packed + 12 * groups; }
};

class UniformInt4Codec final : public CodecBase {
 public:
  explicit UniformInt4Codec(const CodecOptions& o) : CodecBase(kInfo, o) {}

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::UniformInt4BodyBytes(g);
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t>, ThreadPool* pool) const override {
    const int64_t n = kv.geom().elements();
    const Sections s(n);
    uint8_t* b = body.data();
    int4g::EncodeF16(kv.k.data, n, b + s.k_packed(), b + s.k_scales(), b + s.k_zeros(),
                     options().path, pool);
    int4g::EncodeF16(kv.v.data, n, b + s.v_packed(), b + s.v_scales(), b + s.v_zeros(),
                     options().path, pool);
    return format::UniformInt4BodyBytes(kv.geom());
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t>, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    const int64_t n = out.geom().elements();
    const Sections s(n);
    const uint8_t* b = body.data();
    int4g::DecodeF16(b + s.k_packed(), b + s.k_scales(), b + s.k_zeros(), n, out.k.data,
                     options().path, pool);
    int4g::DecodeF16(b + s.v_packed(), b + s.v_scales(), b + s.v_zeros(), n, out.v.data,
                     options().path, pool);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewUniformInt4Codec(const CodecOptions& o) {
  return std::make_unique<UniformInt4Codec>(o);
}

}  // namespace kvs
