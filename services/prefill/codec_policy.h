// services/prefill/codec_policy.h — the `auto` codec (ARCHITECTURE.md §7): per decode peer an
// EWMA of measured link goodput; per codec a throughput and ratio measured at start-up (a short
// self-benchmark on this machine, on a KV chunk of the served model's geometry) and a quality
// class. Choose() picks the codec with the smallest predicted handoff (the pipelined model:
// first chunk through every stage, then the slowest stage per remaining chunk) among those whose
// quality class meets the request's floor, and says why.
//
// Quality classes (request floor: 0 = any, 1, 2, 3 = lossless only):
//   3 lossless (identity, lossless_*); 2 8-bit (uniform_int8, fp8_e4m3, mixed_k8v4);
//   1 ~4-bit (uniform_int4, cachegen, palu_int4); 0 the rest (2-bit, pruning, low rank).
//
// Thread-safety: thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor/kv.h"
#include "common/thread_pool/thread_pool.h"
#include "kernels/codec.h"

namespace kvs::prefill {

int QualityClass(absl::string_view codec);

struct CodecProfile {
  std::string name;
  int quality = 0;
  double ratio = 1;        // raw / payload on the calibration chunk
  double encode_gbps = 0;  // raw bytes encoded per second (decimal Gbit/s)
  double decode_gbps = 0;
};

class CodecPolicy {
 public:
  // Benchmarks every candidate the registry can create on synthetic KV of `chunk` geometry
  // (skipping those that fail, with a warning). FAILED_PRECONDITION when none works.
  static absl::StatusOr<std::unique_ptr<CodecPolicy>> Calibrate(
      const CodecRegistry& registry, const std::vector<std::string>& candidates,
      const KvGeometry& chunk, ThreadPool* pool, double initial_gbps);
  // For tests: fixed profiles.
  CodecPolicy(std::vector<CodecProfile> profiles, double initial_gbps);

  struct Choice {
    std::string codec;
    std::string reason;
    double predicted_ms = 0;
  };
  // `chunks` chunks of `chunk_raw_bytes` each to `peer`. FAILED_PRECONDITION when no candidate
  // meets the floor; INVALID_ARGUMENT for a floor outside [0, 3].
  absl::StatusOr<Choice> Choose(const std::string& peer, int64_t chunk_raw_bytes, int64_t chunks,
                                int quality_floor) const;
  // Feeds a measured goodput (wire bytes over wire time) for `peer` into its EWMA.
  void ObserveLink(const std::string& peer, double gbps);
  double LinkGbps(const std::string& peer) const;
  const std::vector<CodecProfile>& profiles() const { return profiles_; }

 private:
  std::vector<CodecProfile> profiles_;
  double initial_gbps_;
  mutable std::mutex mu_;
  std::map<std::string, double> link_gbps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvs::prefill
