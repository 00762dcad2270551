// main() of the GPU test binaries: exits 77 — ctest's SKIP_RETURN_CODE (kvs_cc_test) — when no
// CUDA device is usable (no driver: cudaErrorInsufficientDriver; no GPU: 0 devices), so that
// GPU-less CI reports these tests as skipped rather than failed.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "common/cuda/cuda_util.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (::testing::GTEST_FLAG(list_tests)) return RUN_ALL_TESTS();  // listing needs no device
  const absl::StatusOr<int> n = kvs::CudaDeviceCount();
  if (!n.ok() || *n == 0) {
    std::fprintf(stderr, "skipping GPU tests: %s\n",
                 n.ok() ? "no CUDA device" : std::string(n.status().message()).c_str());
    return 77;
  }
  return RUN_ALL_TESTS();
}
