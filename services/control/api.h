// services/control/api.h — the control plane's domain types, free of protobuf and gRPC.
//
// kvs-prefill's logic (services/prefill/) talks to a decode daemon through DecodeApi; the gRPC
// client (services/control/decode_client.h) implements it over the network, and tests implement
// it in process. services/control/convert.h translates these types to and from kvshuttle.v1
// messages; nothing else sees generated code.
//
// Token streams: a TokenSink receives each generated token in order; a non-OK return (the client
// went away) stops the producer, which then returns that status.
//
// Thread-safety: plain values; DecodeApi implementations are thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/tensor/kv.h"
#include "services/transfer/frame.h"

namespace kvs::control {

// Greedy when temperature == 0 (the default).
struct SamplingParams {
  float temperature = 0;
  uint64_t seed = 0;
  float top_p = 0;    // 0 or 1: no nucleus cut
};
// INVALID_ARGUMENT for a negative or non-finite temperature or top_p outside [0, 1].
absl::Status ValidateSampling(const SamplingParams& s);

enum class TransportKind { kUnspecified = 0, kTcp = 1, kUcx = 2 };
absl::string_view TransportKindName(TransportKind t);  // "tcp", "ucx", "unspecified"
// "tcp" / "ucx"; INVALID_ARGUMENT otherwise.
absl::StatusOr<TransportKind> ParseTransportKind(absl::string_view name);

// Per-request measurements (ms unless stated); mirrors kvshuttle.v1.RequestStats.
struct RequestStats {
  std::string request_id;
  std::string codec;
  std::string codec_reason;
  std::string transport;
  bool pipelined = false;
  bool layer_pipelined = false;

  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;

  double tokenize_ms = 0;
  double prefill_ms = 0;
  double encode_ms = 0;
  double queue_ms = 0;
  double wire_ms = 0;
  double decompress_ms = 0;
  double handoff_ms = 0;
  double ttft_ms = 0;
  double time_to_second_token_ms = 0;
  double tpot_ms = 0;
  double total_ms = 0;

  int64_t raw_bytes = 0;
  int64_t wire_bytes = 0;
  double ratio = 0;
  int64_t chunks = 0;

  double link_gbps = 0;
  double predicted_handoff_ms = 0;
  double predicted_serial_ms = 0;

  std::string decode_peer;
  std::string finish_reason;  // "length", "eos"
};

struct TokenPiece {
  int32_t token_id = 0;
  std::string text;
  int32_t index = 0;  // position in the generated sequence (0 = the first token)
};
using TokenSink = std::function<absl::Status(const TokenPiece&)>;

// Prefill.Generate, after translation.
struct GenerateParams {
  std::string request_id;
  std::string prompt;                     // text, or
  std::vector<int32_t> prompt_token_ids;  // ids (exactly one of the two)
  int32_t max_new_tokens = 0;
  SamplingParams sampling;
  std::string codec;  // "" = the daemon's default; "auto" = the policy
  int32_t quality_floor = 0;
  double min_token_agreement = 0;  // "auto": measured TA floor; 0 = unset
  std::string decode_target;       // "" = pick a configured peer
  std::optional<bool> pipelined;   // unset = the daemon's default
  bool chat = false;               // wrap the prompt in the model's chat template
};

// Decode.OpenSession.
struct OpenSessionParams {
  std::string request_id;
  std::string model_fingerprint;
  KvGeometry geom;
  DType dtype = DType::kF16;
  std::string codec;  // a concrete registry name
  bool fp8_compat = false;
  bool prune_fill_zero = false;
  uint64_t codec_params_digest = 0;
  int64_t layers_per_chunk = 1;
  int64_t tokens_per_chunk = 0;
  TransportKind transport = TransportKind::kUnspecified;
  uint32_t frame_version = 0;
  int64_t lease_ms = 0;  // 0: the daemon's default
};

struct SessionGrant {
  uint64_t session_id = 0;
  transfer::SessionToken token{};
  TransportKind transport = TransportKind::kUnspecified;
  std::string endpoint;  // what Transport::Connect takes: "host:port" or a hex UCX address
  std::string transport_detail;
  int64_t lease_ms = 0;
  uint64_t codec_params_digest = 0;
  uint32_t chunk_count = 0;
  uint32_t frame_version = 0;
};

// Decode.Resume.
struct ResumeParams {
  uint64_t session_id = 0;
  transfer::SessionToken token{};
  int32_t first_token = 0;
  int32_t max_new_tokens = 0;  // total, including first_token
  SamplingParams sampling;
  std::string request_id;
};

// Info, for both daemons.
struct ServerInfo {
  std::string role;
  std::string model_name;
  std::string model_fingerprint;
  int64_t layers = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_context = 0;
  int64_t vocab_size = 0;
  std::vector<std::string> codecs;
  std::vector<std::string> transports;
  std::string default_codec;
  std::string default_transport;
  std::string version;
  uint32_t frame_version = 0;
  std::vector<std::string> decode_peers;
  int64_t max_new_tokens_limit = 0;
  int64_t max_prompt_tokens = 0;
};

// The decode daemon as seen by kvs-prefill. Every call carries a deadline.
class DecodeApi {
 public:
  virtual ~DecodeApi() = default;
  virtual std::string target() const = 0;  // "host:port" (for stats and logs)
  virtual absl::StatusOr<SessionGrant> OpenSession(const OpenSessionParams& p,
                                                   absl::Time deadline) = 0;
  // Streams the tokens after first_token to `sink`; returns the decode side's stats
  // (generated_tokens counts first_token too, finish_reason, decompress and step timings).
  virtual absl::StatusOr<RequestStats> Resume(const ResumeParams& p, const TokenSink& sink,
                                              absl::Time deadline) = 0;
  // Idempotent: returns whether the session still existed.
  virtual absl::StatusOr<bool> CloseSession(uint64_t session_id, const transfer::SessionToken& token,
                                            absl::string_view reason, absl::Time deadline) = 0;
  virtual absl::StatusOr<ServerInfo> Info(absl::Time deadline) = 0;
};

// The kvs-prefill daemon as seen by clients (kvs-loadgen, tests).
class PrefillApi {
 public:
  virtual ~PrefillApi() = default;
  virtual std::string target() const = 0;
  // Streams every generated token (the first one included) to `sink`; returns the final stats.
  virtual absl::StatusOr<RequestStats> Generate(const GenerateParams& p, const TokenSink& sink,
                                                absl::Time deadline) = 0;
  virtual absl::StatusOr<ServerInfo> Info(absl::Time deadline) = 0;
};

// Milliseconds between two CLOCK_MONOTONIC ns readings.
inline double MsBetween(int64_t begin_ns, int64_t end_ns) {
  return static_cast<double>(end_ns - begin_ns) / 1e6;
}

}  // namespace kvs::control
