// kernels/cpu/cpu_util.h — internal: what the CPU codecs share besides CodecBase.
//
//   HasAvx2F16c(), HasAvx2F16cFma()   run-time CPU checks, evaluated once;
//   RunShares(pool, n, fn)            units [0, n) in one contiguous share per pool thread;
//   WorkspaceArena                    64-byte-aligned arrays carved from a caller's workspace.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "absl/types/span.h"
#include "common/thread_pool/thread_pool.h"

namespace kvs {

// True when the CPU has AVX2 and F16C (the fast paths' intrinsics).
inline bool HasAvx2F16c() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  }();
  return ok;
}
// ... and FMA.
inline bool HasAvx2F16cFma() {
  static const bool ok = HasAvx2F16c() && __builtin_cpu_supports("fma");
  return ok;
}

// Splits units [0, n) into one contiguous share per pool thread and runs fn(share, begin, end);
// `share` (< PoolThreads(pool)) picks the thread's scratch.
template <typename Fn>
void RunShares(ThreadPool* pool, int64_t n, const Fn& fn) {
  const int64_t shares = std::min<int64_t>(PoolThreads(pool), n);
  ParallelFor(pool, shares, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) fn(i, n * i / shares, n * (i + 1) / shares);
  });
}

// Workspace carving: WorkspaceBytes() reserves the padded sizes it will Take() plus
// kWorkspaceSlack, so any base alignment of the caller's workspace works.
inline constexpr size_t kWorkspaceAlign = 64;
inline constexpr size_t kWorkspaceSlack = kWorkspaceAlign;
constexpr size_t AlignedBytes(size_t bytes) {
  return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

class WorkspaceArena {
 public:
  explicit WorkspaceArena(absl::Span<uint8_t> ws)
      : p_(ws.data() + (kWorkspaceAlign - reinterpret_cast<uintptr_t>(ws.data()) % kWorkspaceAlign) %
                           kWorkspaceAlign) {}
  // n elements of T, 64-byte aligned; the next Take starts AlignedBytes(n * sizeof(T)) later.
  template <typename T>
  T* Take(size_t n) {
    T* t = reinterpret_cast<T*>(p_);
    p_ += AlignedBytes(n * sizeof(T));
    return t;
  }

 private:
  uint8_t* p_;
};

}  // namespace kvs
