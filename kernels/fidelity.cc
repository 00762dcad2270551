#include "kernels/fidelity.h"

#include <cmath>

#include "common/half/half.h"

namespace kvs {
namespace {

void LayerStats(const uint16_t* a, const uint16_t* b, int64_t n, double* cos, double* mse,
                double* max_abs) {
  double dot = 0, na = 0, nb = 0, se = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = HalfToFloat(a[i]), y = HalfToFloat(b[i]);
    dot += x * y;
    na += x * x;
    nb += y * y;
    se += (x - y) * (x - y);
    *max_abs = std::max(*max_abs, std::fabs(x - y));
  }
  if (na == 0 && nb == 0) {
    *cos = 1.0;
  } else if (na == 0 || nb == 0) {
    *cos = 0.0;
  } else {
    *cos = dot / (std::sqrt(na) * std::sqrt(nb));
  }
  *mse = n > 0 ? se / static_cast<double>(n) : 0.0;
}

}  // namespace

Fidelity MeasureFidelity(const KvCacheView& orig, const KvCacheView& recon) {
  Fidelity f;
  const KvGeometry& g = orig.geom();
  const int64_t n = g.layer_elements();
  for (int64_t l = 0; l < g.layers; ++l) {
    double c, m;
    LayerStats(orig.k.layer(l), recon.k.layer(l), n, &c, &m, &f.max_abs_error);
    f.key_cosine.push_back(c);
    f.key_mse.push_back(m);
    LayerStats(orig.v.layer(l), recon.v.layer(l), n, &c, &m, &f.max_abs_error);
    f.value_cosine.push_back(c);
    f.value_mse.push_back(m);
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / static_cast<double>(v.size());
  };
  f.mean_key_cosine = mean(f.key_cosine);
  f.mean_value_cosine = mean(f.value_cosine);
  f.mean_key_mse = mean(f.key_mse);
  f.mean_value_mse = mean(f.value_mse);
  return f;
}

}  // namespace kvs
