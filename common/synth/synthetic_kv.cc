#include "absl/strings/string_view.h"
#include "common/synth/synthetic_kv.h"

#include <cmath>
#include <cstring>

#include "common/half/half.h"
#include "common/npy/npy.h"
#include "common/status/status.h"

namespace kvs {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return (Next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = Uniform(), u2 = Uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return r * std::cos(2.0 * M_PI * u2);
  }

 private:
  uint64_t s_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace

OwnedKv OwnedKv::Zeros(const KvGeometry& g) {
  OwnedKv kv;
  kv.geom = g;
  kv.k.assign(g.elements(), 0);
  kv.v.assign(g.elements(), 0);
  return kv;
}

OwnedKv MakeSyntheticKv(const KvGeometry& g, uint64_t seed, SynthKind kind) {
  OwnedKv kv = OwnedKv::Zeros(g);
  Rng rng(seed);
  const int64_t S = g.tokens, D = g.head_dim;
  std::vector<float> chan_scale(D), drift(D);
  for (int64_t l = 0; l < g.layers; ++l) {
    for (int64_t h = 0; h < g.heads; ++h) {
      std::fill(chan_scale.begin(), chan_scale.end(), 1.0f);
      std::fill(drift.begin(), drift.end(), 0.0f);
      if (kind == SynthKind::kRealistic) {
        const int64_t n_out = std::max<int64_t>(1, D / 32);
        for (int64_t i = 0; i < n_out; ++i) {
          chan_scale[rng.Next() % D] = static_cast<float>(4.0 + 8.0 * rng.Uniform());
        }
        for (int64_t d = 0; d < D; ++d) drift[d] = static_cast<float>(0.5 * rng.Normal());
      }
      uint16_t* k = kv.k.data() + (l * g.heads + h) * S * D;
      uint16_t* v = kv.v.data() + (l * g.heads + h) * S * D;
      for (int64_t s = 0; s < S; ++s) {
        const float t = S > 1 ? static_cast<float>(s) / static_cast<float>(S - 1) : 0.0f;
        for (int64_t d = 0; d < D; ++d) {
          const float x = static_cast<float>(rng.Normal());
          k[s * D + d] = FloatToHalf(chan_scale[d] * (x + drift[d] * t));
        }
      }
      const float vstd = kind == SynthKind::kRealistic ? 0.5f : 1.0f;
      for (int64_t i = 0; i < S * D; ++i) v[i] = FloatToHalf(vstd * static_cast<float>(rng.Normal()));
    }
  }
  return kv;
}

absl::StatusOr<OwnedKv> ReadKvNpy(const std::string& keys_path, const std::string& values_path) {
  if (keys_path.empty() || values_path.empty()) {
    return absl::InvalidArgumentError("K and V .npy paths are both required");
  }
  OwnedKv kv;
  for (int which = 0; which < 2; ++which) {
    const std::string& path = which == 0 ? keys_path : values_path;
    KVS_ASSIGN_OR_RETURN(NpyArray a, ReadNpy(path));
    if (a.dtype != "<f2" || a.shape.size() != 4) {
      return absl::InvalidArgumentError(path + ": want an fp16 [L,H,S,D] array");
    }
    const KvGeometry g{a.shape[0], a.shape[1], a.shape[2], a.shape[3]};
    KVS_RETURN_IF_ERROR(Annotate(ValidateGeometry(g), path));
    if (which == 1 && g != kv.geom) {
      return absl::InvalidArgumentError("K " + kv.geom.ToString() + " and V " + g.ToString() +
                                        " differ");
    }
    kv.geom = g;
    auto& dst = which == 0 ? kv.k : kv.v;
    dst.resize(static_cast<size_t>(g.elements()));
    std::memcpy(dst.data(), a.data.data(), a.data.size());
  }
  return kv;
}

absl::string_view DescribeSynthetic(SynthKind kind) {
  switch (kind) {
    case SynthKind::kRealistic:
      return "synthetic KV: keys N(0,1) with D/32 outlier channels per head scaled 4-12x plus a "
             "slow drift along tokens; values N(0, 0.5^2)";
    case SynthKind::kGaussian:
      return "synthetic KV: keys and values N(0,1)";
  }
  return "";
}

}  // namespace kvs
