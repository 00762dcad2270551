// kernels/format/identity.h — identity and lossless payload bodies.
//
// identity body:      K bytes (2N) ‖ V bytes (2N), the 16-bit elements in [L,H,S,D] order.
//   payload bytes = 32 + 4·N            (N = L·H·S·D; ratio = 4N / (32 + 4N))
// lossless_zstd body: u64 raw length (4N) ‖ one zstd frame (level 3) of the identity body.
// lossless_lz4 body:  u64 raw length (4N) ‖ one LZ4 frame (default preferences) of the identity body.
//   payload bytes = 32 + 8 + compressed length (data-dependent; bound from ZSTD/LZ4F_compressBound)
#pragma once

#include <cstdint>

#include "common/tensor/kv.h"

namespace kvs::format {

inline uint64_t IdentityBodyBytes(const KvGeometry& g) { return 4 * static_cast<uint64_t>(g.elements()); }

}  // namespace kvs::format
