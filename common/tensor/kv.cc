#include "absl/strings/string_view.h"
#include "common/tensor/kv.h"

#include "absl/strings/str_cat.h"

namespace kvs {

absl::string_view DTypeName(DType d) {
  switch (d) {
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
  }
  return "unknown";
}

std::string KvGeometry::ToString() const {
  return absl::StrCat("[L=", layers, ", H=", heads, ", S=", tokens, ", D=", head_dim, "]");
}

absl::Status ValidateGeometry(const KvGeometry& g) {
  constexpr int64_t kMaxDim = int64_t{1} << 24;
  for (int64_t d : {g.layers, g.heads, g.tokens, g.head_dim}) {
    if (d < 1 || d > kMaxDim) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv geometry ", g.ToString(), ": every dimension must be in [1, 2^24]"));
    }
  }
  if (g.layers * g.heads > kMaxDim || g.tokens * g.head_dim > (int64_t{1} << 32) ||
      g.elements() >= (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv geometry ", g.ToString(), " is too large"));
  }
  return absl::OkStatus();
}

namespace {
template <typename View>
absl::Status ValidateKvImpl(const View& kv) {
  if (kv.k.data == nullptr || kv.v.data == nullptr) {
    return absl::InvalidArgumentError("kv cache: null K or V data");
  }
  if (kv.k.geom != kv.v.geom) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache: K geometry ", kv.k.geom.ToString(),
                                                   " differs from V ", kv.v.geom.ToString()));
  }
  if (kv.k.dtype != kv.v.dtype) {
    return absl::InvalidArgumentError("kv cache: K and V dtypes differ");
  }
  return ValidateGeometry(kv.k.geom);
}
}  // namespace

absl::Status ValidateKv(const KvCacheView& kv) { return ValidateKvImpl(kv); }
absl::Status ValidateKv(const MutableKvCacheView& kv) { return ValidateKvImpl(kv); }

}  // namespace kvs
