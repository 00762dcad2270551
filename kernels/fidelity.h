// kernels/fidelity.h — tensor-fidelity metrics of a reconstructed KV cache (CODECS.md §4.3).
//
// Per layer l, over all H·S·D elements of K[l] (and V[l]) in fp32:
//   cos_l = <a, b> / (|a| |b|)   (1 if both are zero, 0 if exactly one is)
//   mse_l = mean((a - b)^2)
// The means are unweighted over layers, as the KVShuttle reference reports them.
#pragma once

#include <vector>

#include "common/tensor/kv.h"

namespace kvs {

struct Fidelity {
  std::vector<double> key_cosine, value_cosine, key_mse, value_mse;  // per layer
  double mean_key_cosine = 0, mean_value_cosine = 0, mean_key_mse = 0, mean_value_mse = 0;
  double max_abs_error = 0;  // over K and V
};

// Compares `recon` with `orig` (same geometry, fp16). Accumulates in fp64.
Fidelity MeasureFidelity(const KvCacheView& orig, const KvCacheView& recon);

}  // namespace kvs
