// services/prefill/codec_policy.h — the `auto` codec (ARCHITECTURE.md §7): per decode peer an
// EWMA of measured link goodput; per codec a throughput and ratio measured at start-up (a short
// self-benchmark on this machine, on a KV chunk of the served model's geometry, with the codec
// pool the daemon encodes with) and its measured quality. Choose() picks the codec with the
// smallest predicted handoff (the pipelined model of CODECS.md §5: first chunk through every
// stage, then the slowest stage per remaining chunk; sequential: the sum) among those that meet
// the request's quality floor, and says why (the predicted ms of the top candidates).
//
// Quality, two sources:
//  * measured: a QualityTable — the `kvs-bench quality --json` report for the served model
//    (deploy/quality/ ships SmolLM2-135M-Instruct's). A codec's token agreement (TA) is the lower
//    bound of its 95 % bootstrap interval when the report has one, else the mean;
//  * fixed classes (no quality file): 3 lossless (identity, lossless_*), 2 8-bit (uniform_int8,
//    fp8_e4m3, mixed_k8v4), 1 ~4-bit (uniform_int4, cachegen, palu_int4), 0 the rest. Without a
//    measurement a lossless codec has TA 1 by construction; a lossy one has no TA and is excluded
//    by any min_token_agreement floor.
// A request's floor is a class (0 = any .. 3 = lossless only) and/or a minimum TA (0 = unset);
// a codec must meet both.
//
// Link: the EWMA (weight 0.3 on the newest) of every transfer's wire goodput to that peer,
// whatever codec carried it (bytes on the wire over the time the link carried them, so encode
// stalls do not count); before the first transfer, `initial_gbps` (config auto_initial_gbps).
// Codec speeds: the start-up calibration until a transfer with that codec was measured, then the
// EWMA of its measured encode (this host, the real pool) and decode (the decode peer's own
// timings, reported in its kDone) rates. Before that, this host's decode speed stands in for the
// decode machine's.
//
// Thread-safety: thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
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

// One codec's measured end-to-end quality (teacher-forced token agreement over prompts).
struct CodecQuality {
  double ta_mean = 0;
  std::optional<double> ta_ci_low;  // lower bound of the 95 % interval, when the report has it
  // What the policy compares with a min_token_agreement floor.
  double ta() const { return ta_ci_low.value_or(ta_mean); }
};

// A `kvs-bench quality --json` report (bench/quality/README.md): {"model": {"path": ...},
// "codecs": [{"codec": NAME, "token_agreement": {"mean": x, "ci95": [lo, hi]}, ...}, ...]}.
// Entries with only an "error" (a codec unavailable in that run) are skipped; other keys ignored.
class QualityTable {
 public:
  // INVALID_ARGUMENT naming `source` and the offending entry for malformed JSON or values.
  static absl::StatusOr<QualityTable> Parse(absl::string_view json, const std::string& source);
  // NOT_FOUND when the file cannot be read; else Parse.
  static absl::StatusOr<QualityTable> Load(const std::string& path);

  std::optional<CodecQuality> Find(absl::string_view codec) const;
  const std::string& model() const { return model_; }  // the report's model.path ("" = absent)
  const std::string& source() const { return source_; }
  size_t size() const { return codecs_.size(); }

 private:
  std::string model_, source_;
  std::map<std::string, CodecQuality, std::less<>> codecs_;
};

struct CodecProfile {
  std::string name;
  int quality = 0;
  double ratio = 1;        // raw / payload on the calibration chunk
  double encode_gbps = 0;  // raw bytes encoded per second incl. CRC (decimal Gbit/s)
  double decode_gbps = 0;  // CRC check + decode, raw bytes per second
  double token_agreement = -1;  // measured TA (CodecQuality::ta); < 0 = not measured
};

struct QualityFloor {
  int quality_class = 0;           // [0, 3]
  double min_token_agreement = 0;  // [0, 1]; 0 = unset
};

class CodecPolicy {
 public:
  // Benchmarks every candidate the registry can create on synthetic KV of `chunk` geometry with
  // `pool` (the daemon's encode pool; null = one thread, as the sender encodes then), skipping
  // those that fail, with a warning. `quality` (nullable: fixed classes) gives measured TA.
  // FAILED_PRECONDITION when none works.
  static absl::StatusOr<std::unique_ptr<CodecPolicy>> Calibrate(
      const CodecRegistry& registry, const std::vector<std::string>& candidates,
      const KvGeometry& chunk, ThreadPool* pool, double initial_gbps,
      const QualityTable* quality = nullptr);
  // For tests: fixed profiles.
  CodecPolicy(std::vector<CodecProfile> profiles, double initial_gbps,
              std::string quality_source = "fixed classes");

  struct Candidate {
    std::string codec;
    double predicted_ms = 0;
  };
  struct Choice {
    std::string codec;
    std::string reason;
    double predicted_ms = 0;
    std::vector<Candidate> ranked;  // every codec meeting the floor, fastest first
    double link_gbps = 0;           // the link rate the prediction used
  };
  // `chunks` chunks of `chunk_raw_bytes` each to `peer`. FAILED_PRECONDITION when no candidate
  // meets the floor; INVALID_ARGUMENT for a class outside [0, 3] or a TA outside [0, 1].
  absl::StatusOr<Choice> Choose(const std::string& peer, int64_t chunk_raw_bytes, int64_t chunks,
                                const QualityFloor& floor, bool pipelined = true) const;
  absl::StatusOr<Choice> Choose(const std::string& peer, int64_t chunk_raw_bytes, int64_t chunks,
                                int quality_floor) const {
    return Choose(peer, chunk_raw_bytes, chunks, QualityFloor{quality_floor, 0});
  }
  // Feeds a measured goodput (wire bytes over wire time) for `peer` into its EWMA; the first
  // observation replaces the prior.
  void ObserveLink(const std::string& peer, double gbps);
  // Feeds a transfer's measured codec stages (Σ encode on this host, Σ CRC check + decode on the
  // decode peer; decode_ms <= 0 = not reported) for `raw_bytes` of K+V into `codec`'s speed EWMAs,
  // which replace the start-up calibration for that codec from then on (the calibration runs on
  // one cache-warm chunk; transfers see the real data, load and decode machine).
  void ObserveCodec(const std::string& codec, double raw_bytes, double encode_ms, double decode_ms);
  struct Speeds {
    double encode_gbps = 0, decode_gbps = 0;
    int64_t encode_observations = 0, decode_observations = 0;  // 0 = the calibration
  };
  Speeds CodecSpeeds(const std::string& codec) const;
  double LinkGbps(const std::string& peer) const;
  int64_t LinkObservations(const std::string& peer) const;
  const std::vector<CodecProfile>& profiles() const { return profiles_; }
  const std::string& quality_source() const { return quality_source_; }

 private:
  struct Link {
    double gbps = 0;
    int64_t observations = 0;
  };
  std::vector<CodecProfile> profiles_;
  double initial_gbps_;
  std::string quality_source_;
  mutable std::mutex mu_;
  std::map<std::string, Link> links_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Speeds> measured_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvs::prefill
