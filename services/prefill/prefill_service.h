// services/prefill/prefill_service.h — kvs-prefill's logic (ARCHITECTURE.md §1): validate the
// request, tokenize, pick a decode peer and a codec, open a session there, run prefill, stream
// the first token to the client at once, hand the KV over the data plane (layer-pipelined when
// enabled), resume generation on the peer and relay its tokens, and finish with the request's
// measurements. No gRPC here: PrefillService implements control::PrefillApi, served by
// control::PrefillGrpcService, and reaches decode peers through control::DecodeApi.
//
// Errors (as gRPC codes at the edge):
//   INVALID_ARGUMENT     empty/oversized prompt, both or neither of prompt and ids, token ids out
//                        of the vocabulary, max_new_tokens outside [1, limit], unknown codec,
//                        bad sampling, decode_target not configured
//   FAILED_PRECONDITION  the decode peer serves another model (fingerprint), or auto found no codec
//   UNAVAILABLE          decode peer unreachable or lost (control or data plane), draining
//   RESOURCE_EXHAUSTED   max_inflight requests already running
//   DEADLINE_EXCEEDED    the call's deadline passed
// After any failure past OpenSession the session is closed on the peer (best effort).
//
// Thread-safety: thread-safe; Generate runs concurrently for different requests.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/thread_pool/thread_pool.h"
#include "kernels/codec.h"
#include "services/control/api.h"
#include "services/control/serving_model.h"
#include "services/metrics/metrics.h"
#include "services/prefill/codec_policy.h"
#include "services/prefill/prefill_options.h"
#include "services/transfer/frame.h"
#include "services/transfer/transport.h"

namespace kvs::prefill {

#define KVS_PREFILL_METRICS(COUNTER, GAUGE, HISTOGRAM)                                           \
  COUNTER(kvs_prefill_requests_total, "Generate requests finished, by codec and status code")    \
  GAUGE(kvs_prefill_requests_inflight, "Generate requests running")                              \
  COUNTER(kvs_prefill_errors_total, "Failed Generate requests, by status code and stage")        \
  COUNTER(kvs_prefill_peer_errors_total, "Decode peer failures, by peer and status code")        \
  HISTOGRAM(kvs_prefill_handoff_seconds, "Prefill end to decode ready (KV decoded), by codec",   \
            ::kvs::metrics::LatencyBuckets())                                                    \
  HISTOGRAM(kvs_prefill_ttft_seconds, "Request received to first token sent",                    \
            ::kvs::metrics::LatencyBuckets())                                                    \
  HISTOGRAM(kvs_prefill_prefill_seconds, "Model prefill time", ::kvs::metrics::LatencyBuckets()) \
  HISTOGRAM(kvs_prefill_tpot_seconds, "Mean time per output token after the first",              \
            ::kvs::metrics::LatencyBuckets())                                                    \
  HISTOGRAM(kvs_prefill_compression_ratio, "Raw KV bytes over wire bytes, by codec",             \
            ::kvs::metrics::RatioBuckets())                                                      \
  COUNTER(kvs_prefill_kv_raw_bytes_total, "KV bytes handed off (fp16 K+V), by codec")            \
  COUNTER(kvs_prefill_kv_wire_bytes_total, "Bytes sent on the data plane, by codec")             \
  COUNTER(kvs_prefill_tokens_generated_total, "Tokens streamed to clients")                      \
  GAUGE(kvs_prefill_transport_info, "Data-plane transport in use (value 1), by kind and lane")   \
  GAUGE(kvs_prefill_link_gbps, "Measured data-plane goodput EWMA per decode peer (Gbit/s)")        \
  COUNTER(kvs_prefill_auto_choice_total, "Requests whose auto codec resolved to this codec")

KVS_METRICS_STRUCT(PrefillMetrics, KVS_PREFILL_METRICS);

// A decode peer: its address and how to reach it.
struct DecodePeer {
  std::string address;
  std::unique_ptr<control::DecodeApi> api;
};

struct PrefillDeps {
  const control::ServingModel* model = nullptr;
  const CodecRegistry* codecs = nullptr;
  transfer::Transport* transport = nullptr;  // the configured data plane
  control::TransportKind transport_kind = control::TransportKind::kTcp;
  std::vector<DecodePeer> peers;     // at least one
  CodecPolicy* policy = nullptr;     // null: "auto" is refused (FAILED_PRECONDITION)
  ThreadPool* codec_pool = nullptr;  // codec Encode threads (null: the sender thread)
  PrefillMetrics* metrics = nullptr;
  std::string version;
};

class PrefillService final : public control::PrefillApi {
 public:
  PrefillService(const PrefillOptions& options, PrefillDeps deps);
  ~PrefillService() override;
  PrefillService(const PrefillService&) = delete;
  PrefillService& operator=(const PrefillService&) = delete;

  std::string target() const override { return "local"; }
  absl::StatusOr<control::RequestStats> Generate(const control::GenerateParams& p,
                                                 const control::TokenSink& sink,
                                                 absl::Time deadline) override;
  absl::StatusOr<control::ServerInfo> Info(absl::Time deadline) override;

  // Refuses new requests (UNAVAILABLE) from now on (SIGTERM drain); running ones continue.
  void StopAdmitting() { admitting_ = false; }
  int inflight() const { return inflight_.load(); }

  // Checks every decode peer's Info: reachable and serving the same model. Logged; returns the
  // first mismatch (FAILED_PRECONDITION) or unreachable peer (UNAVAILABLE).
  absl::Status CheckPeers(absl::Time deadline);

 private:
  struct Request;
  absl::StatusOr<control::RequestStats> Run(Request& r);
  absl::Status Validate(const control::GenerateParams& p) const;
  DecodePeer* PickPeer(const std::string& target);

  const PrefillOptions options_;
  PrefillDeps deps_;
  std::atomic<bool> admitting_{true};
  std::atomic<int> inflight_{0};
  std::atomic<uint64_t> next_peer_{0};
  std::atomic<uint64_t> next_request_{1};
};

}  // namespace kvs::prefill
