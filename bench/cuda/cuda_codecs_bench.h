// bench/cuda/cuda_codecs_bench.h — `kvs-bench codecs --device cuda`: the CUDA codecs' encode and
// decode throughput, timed with CUDA events, as a share of the device-to-device copy bandwidth
// measured in the same run on the same bytes, with a GPU-vs-CPU check of payload bytes and
// decoded values per codec, beside the KVShuttle paper's A100 numbers (CODECS.md §7.4).
//
//   kvs::bench::CudaBenchConfig cfg;          // Llama-3.1-8B and -70B at 1K..32K tokens
//   absl::Status s = kvs::bench::RunCudaCodecsBench(cfg, std::cout);
//
// Throughput = uncompressed K+V bytes (fp16) / time; copy GB/s = bytes copied / time of one
// cudaMemcpyAsync (device to device) of the same K+V bytes — the DRAM traffic of a copy is twice
// that, so a fused codec that moves fewer bytes than a copy can exceed 100 %.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kvs::bench {

struct CudaBenchConfig {
  std::vector<std::string> models = {"llama-3.1-8b", "llama-3.1-70b"};  // geometry presets
  std::vector<int64_t> tokens = {1024, 4096, 16384, 32768};
  std::vector<std::string> codecs;  // registry names; empty: every CUDA codec
  int64_t repeats = 20;             // timed runs per measurement, after 2 warm-ups (median)
  bool fp8_compat = false;          // fp8_e4m3 in the reference's offset-uint8 mode
  bool zero_fill = false;           // pruning codecs: PruneFill::kZero
  // GPU vs CPU codec on real-looking KV (MakeSyntheticKv kRealistic) of the first model at
  // check_tokens: payload bytes and decoded fp16 bits compared, mismatches counted.
  bool check = true;
  int64_t check_tokens = 1024;
  std::string json;  // results file ("" = none, "-" = stdout)
};

absl::Status RunCudaCodecsBench(const CudaBenchConfig& cfg, std::ostream& out);

}  // namespace kvs::bench
