// bench/cuda/synth_kv.cuh — fills device K/V with synthetic fp16 KV on the GPU (the benchmark's
// geometries reach 10 GiB, too slow to generate on the host): per element a hashed N(0, 1) value,
// times 6 on every 37th channel (outlier channels) and a per-layer scale in [0.5, 2).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/tensor/kv.h"

namespace kvs::bench {

absl::Status FillSyntheticKv(uint16_t* k, uint16_t* v, const KvGeometry& g, uint64_t seed,
                             cudaStream_t stream);

}  // namespace kvs::bench
