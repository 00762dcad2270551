// services/loadgen/loadgen.h — kvs-loadgen's engine: drives a kvs-prefill with prompts, open loop
// (Poisson arrivals at `rate`) or closed loop (`concurrency` clients), once per codec of a list,
// and summarizes each codec's run: throughput, TTFT / handoff / TPOT percentiles, bytes on the
// wire, ratio, errors, and (with check_against) token agreement with a reference codec's output
// for the same prompts.
//
//   LoadgenOptions o;  o.codecs = {"identity", "uniform_int8"};  o.check_against = "identity";
//   control::GrpcPrefillClient client(control::MakeChannel(o.target), o.target);
//   KVS_ASSIGN_OR_RETURN(std::vector<Prompt> prompts, LoadPrompts(o));
//   KVS_ASSIGN_OR_RETURN(LoadgenReport r, RunLoadgen(o, prompts, client, /*progress=*/nullptr));
//   std::cout << FormatTable(r);
//
// Thread-safety: RunLoadgen runs its own client threads; call it from one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/config/config.h"
#include "services/control/api.h"

namespace kvs::loadgen {

struct LoadgenOptions {
  // kvs-prefill to drive.
  std::string target = "127.0.0.1:50051";
  // Prompts: paragraphs of this text file (headings and blank lines skipped), cut to
  // prompt_words words; or, with prompt_text set, that one prompt for every request; or, with
  // prompt_tokens > 0, fixed-length prompts of that many pseudo-random token ids (a fixed KV size
  // per request, for transfer measurements; their outputs are not meaningful text).
  std::string prompts_file;
  std::string prompt_text;
  int64_t prompt_words = 48;
  int64_t prompt_tokens = 0;
  int64_t num_prompts = 16;  // distinct prompts cycled through
  // Requests per codec (or run for duration_s seconds when > 0).
  int64_t requests = 32;
  double duration_s = 0;
  // Open loop: Poisson arrivals at `rate` requests/s (0 = closed loop). At most `concurrency`
  // requests outstanding either way.
  double rate = 0;
  int64_t concurrency = 4;
  // Codecs to compare, run one after another with the same prompts.
  std::vector<std::string> codecs = {"identity"};
  // For "auto": the request's floors (min measured token agreement, 0 = unset; quality class).
  double min_ta = 0;
  int64_t quality_floor = 0;
  // Token agreement of every codec's output with this codec's (run first when listed later).
  std::string check_against;
  int64_t max_new_tokens = 32;
  double temperature = 0;
  int64_t seed = 0;
  bool chat = false;
  // Per-request deadline.
  int64_t timeout_ms = 60000;
  // Outputs: --json FILE ("-" = stdout), --save-outputs FILE (the generated texts, JSON).
  std::string json;
  std::string save_outputs;
  bool progress = true;
  // Print prompt 0 and each codec's generated text for it before the table.
  bool show_sample = false;
  std::string log_level = "warn";
};

void BindLoadgenOptions(config::ConfigTable& table, LoadgenOptions* o);
absl::Status ValidateLoadgenOptions(const LoadgenOptions& o);

struct Prompt {
  std::string text;          // or
  std::vector<int32_t> ids;  // token ids (prompt_tokens mode)
  std::string Describe() const;
};

// The prompts the options describe. `vocab_size` (from the target's Info) bounds the ids of
// prompt_tokens mode.
absl::StatusOr<std::vector<Prompt>> LoadPrompts(const LoadgenOptions& o, int64_t vocab_size = 0);

struct RequestResult {
  int64_t prompt_index = 0;
  absl::Status status;
  control::RequestStats stats;
  std::vector<int32_t> tokens;
  std::string text;
  double latency_ms = 0;  // client side: issue -> final message
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
};

struct CodecSummary {
  std::string codec;
  int64_t requests = 0;
  int64_t errors = 0;
  std::vector<std::string> error_samples;  // up to 3 distinct messages
  double wall_s = 0;
  double throughput_rps = 0;
  double tokens_per_s = 0;
  Percentiles ttft_ms, handoff_ms, tpot_ms, latency_ms;
  // Stage means over successful requests (from the prefill side's stats).
  double prefill_ms_mean = 0, encode_ms_mean = 0, wire_ms_mean = 0, decompress_ms_mean = 0;
  double predicted_handoff_ms_mean = 0;
  double wire_bytes_mean = 0;
  double raw_bytes_mean = 0;
  double ratio = 0;  // Σraw / Σwire
  std::string transport;
  // Successful requests per codec that carried the KV (for "auto": what it resolved to).
  std::map<std::string, int64_t> resolved;
  // Against check_against (when set and both ran): mean token agreement over prompts (matching
  // positions / longer length) and the fraction of prompts with identical output.
  bool has_agreement = false;
  double token_agreement = 0;
  double exact_match = 0;
  std::vector<RequestResult> results;
};

struct LoadgenReport {
  std::string target;
  std::string mode;  // "closed(concurrency=4)" or "open(rate=10/s, ...)"
  std::vector<CodecSummary> codecs;
};

// Progress callback: (codec, done, total) — total is 0 in duration mode.
using ProgressFn = std::function<void(const std::string&, int64_t, int64_t)>;

absl::StatusOr<LoadgenReport> RunLoadgen(const LoadgenOptions& o, const std::vector<Prompt>& prompts,
                                         control::PrefillApi& client, const ProgressFn& progress);

// Token agreement of `a` with reference `ref`: positions where both agree over the longer length.
double TokenAgreement(const std::vector<int32_t>& ref, const std::vector<int32_t>& a);
Percentiles ComputePercentiles(std::vector<double> v);

std::string FormatTable(const LoadgenReport& r);
// JSON (nlohmann) text: per codec the summary fields; `with_outputs` adds the texts per prompt.
std::string ToJson(const LoadgenReport& r, bool with_outputs);

}  // namespace kvs::loadgen
