#include "services/prefill/prefill_service.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "services/transfer/pipeline.h"

namespace kvs::prefill {

using control::RequestStats;
using control::TokenPiece;

namespace {

std::string CodeName(absl::StatusCode c) { return absl::StatusCodeToString(c); }

absl::Time Earlier(absl::Time a, absl::Time b) { return a < b ? a : b; }

// Keeps the status code, says which peer and stage failed.
absl::Status PeerError(const absl::Status& s, const std::string& peer, absl::string_view stage) {
  if (s.ok()) return s;
  if (absl::StrContains(s.message(), peer)) return s;  // the client already named the peer
  return absl::Status(s.code(), absl::StrCat("decode peer ", peer, ": ", stage, ": ", s.message()));
}

// Joins a thread on scope exit.
struct Joiner {
  std::thread* t;
  ~Joiner() {
    if (t->joinable()) t->join();
  }
};

}  // namespace

struct PrefillService::Request {
  control::GenerateParams p;
  const control::TokenSink* sink = nullptr;
  absl::Time deadline;
  int64_t start_ns = 0;
  std::string stage = "validate";
  std::string codec;
  std::string peer;
};

PrefillService::PrefillService(const PrefillOptions& options, PrefillDeps deps)
    : options_(options), deps_(std::move(deps)) {
  if (deps_.metrics != nullptr) {
    deps_.metrics->kvs_prefill_transport_info
        .With({{"kind", std::string(control::TransportKindName(deps_.transport_kind))}})
        .Set(1);
  }
}

PrefillService::~PrefillService() = default;

absl::Status PrefillService::Validate(const control::GenerateParams& p) const {
  if (p.max_new_tokens < 1 || p.max_new_tokens > options_.max_new_tokens_limit) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens ", p.max_new_tokens, " is outside [1, ",
                                                   options_.max_new_tokens_limit, "]"));
  }
  KVS_RETURN_IF_ERROR(control::ValidateSampling(p.sampling));
  if (p.prompt.empty() && p.prompt_token_ids.empty()) {
    return absl::InvalidArgumentError("the prompt is empty (give prompt text or prompt_token_ids)");
  }
  if (!p.prompt.empty() && !p.prompt_token_ids.empty()) {
    return absl::InvalidArgumentError("give either prompt or prompt_token_ids, not both");
  }
  if (static_cast<int64_t>(p.prompt.size()) > options_.max_prompt_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt is ", p.prompt.size(), " bytes; at most ",
                                                   options_.max_prompt_bytes));
  }
  if (!p.prompt_token_ids.empty() && p.chat) {
    return absl::InvalidArgumentError("chat applies to prompt text, not to prompt_token_ids");
  }
  return absl::OkStatus();
}

DecodePeer* PrefillService::PickPeer(const std::string& target) {
  if (target.empty()) {
    return &deps_.peers[next_peer_.fetch_add(1) % deps_.peers.size()];
  }
  for (DecodePeer& p : deps_.peers) {
    if (p.address == target) return &p;
  }
  return nullptr;
}

absl::StatusOr<RequestStats> PrefillService::Generate(const control::GenerateParams& p,
                                                      const control::TokenSink& sink,
                                                      absl::Time deadline) {
  Request r;
  r.p = p;
  r.sink = &sink;
  r.deadline = Earlier(deadline, absl::Now() + absl::Milliseconds(options_.request_timeout_ms));
  r.start_ns = transfer::MonotonicNowNs();
  if (r.p.request_id.empty()) r.p.request_id = absl::StrCat("req-", next_request_.fetch_add(1));

  absl::StatusOr<RequestStats> result;
  if (!admitting_) {
    result = absl::UnavailableError("kvs-prefill is draining; not admitting requests");
  } else if (inflight_.fetch_add(1) >= options_.max_inflight) {
    inflight_.fetch_sub(1);
    result = absl::ResourceExhaustedError(
        absl::StrCat("kvs-prefill runs ", options_.max_inflight, " requests already (max_inflight)"));
  } else {
    if (deps_.metrics) deps_.metrics->kvs_prefill_requests_inflight.With().Increment();
    result = Run(r);
    inflight_.fetch_sub(1);
    if (deps_.metrics) deps_.metrics->kvs_prefill_requests_inflight.With().Decrement();
  }
  const std::string code = CodeName(result.status().code());
  if (deps_.metrics) {
    deps_.metrics->kvs_prefill_requests_total.With({{"codec", r.codec}, {"code", code}}).Increment();
    if (!result.ok()) deps_.metrics->kvs_prefill_errors_total.With({{"code", code}, {"stage", r.stage}}).Increment();
  }
  if (!result.ok()) {
    // Client mistakes are the client's to log; failures of this service or its peers are ours.
    const absl::StatusCode c = result.status().code();
    if (c == absl::StatusCode::kInvalidArgument || c == absl::StatusCode::kCancelled) {
      KVS_LOG_DEBUG("request {} refused at {}: {}", r.p.request_id, r.stage, result.status().ToString());
    } else {
      KVS_LOG_ERROR("request {} failed at {}: {}", r.p.request_id, r.stage, result.status().ToString());
    }
  }
  return result;
}

absl::StatusOr<RequestStats> PrefillService::Run(Request& r) {
  const control::GenerateParams& p = r.p;
  const control::ServingModel& model = *deps_.model;
  const ModelConfig& mc = model.config();
  RequestStats st;
  st.request_id = p.request_id;

  // ---- validate and tokenize -------------------------------------------------------------------
  KVS_RETURN_IF_ERROR(Validate(p));
  r.stage = "tokenize";
  int64_t t_tok0 = transfer::MonotonicNowNs();
  std::vector<int32_t> tokens;
  if (!p.prompt_token_ids.empty()) {
    for (int32_t id : p.prompt_token_ids) {
      if (id < 0 || id >= model.tokenizer().vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ",
                                                       model.tokenizer().vocab_size(), ")"));
      }
    }
    tokens = p.prompt_token_ids;
  } else {
    KVS_ASSIGN_OR_RETURN(tokens, model.EncodePrompt(p.prompt, p.chat));
  }
  if (tokens.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  const int64_t context = model.max_context();
  const int64_t max_prompt = options_.max_prompt_tokens > 0 ? std::min(options_.max_prompt_tokens, context - 1)
                                                            : context - 1;
  const int64_t S = static_cast<int64_t>(tokens.size());
  if (S > max_prompt) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt is ", S, " tokens; at most ", max_prompt));
  }
  if (S + p.max_new_tokens > context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", S, " tokens) + max_new_tokens (", p.max_new_tokens,
                                                   ") exceeds the model's context of ", context));
  }
  st.prompt_tokens = S;
  st.tokenize_ms = control::MsBetween(t_tok0, transfer::MonotonicNowNs());

  // ---- peer and codec --------------------------------------------------------------------------
  r.stage = "route";
  DecodePeer* peer = PickPeer(p.decode_target);
  if (peer == nullptr) {
    std::vector<std::string> names;
    for (const DecodePeer& d : deps_.peers) names.push_back(d.address);
    return absl::InvalidArgumentError(absl::StrCat("decode_target '", p.decode_target,
                                                   "' is not a configured peer (", absl::StrJoin(names, ", "), ")"));
  }
  r.peer = peer->address;
  st.decode_peer = peer->address;
  const KvGeometry geom = mc.KvGeometryFor(S);
  const int64_t layers_per_chunk = std::min<int64_t>(options_.layers_per_chunk, geom.layers);
  const int64_t chunks = (geom.layers + layers_per_chunk - 1) / layers_per_chunk;

  std::string codec_name = p.codec.empty() ? options_.codec : p.codec;
  st.codec_reason = p.codec.empty() ? "default" : "requested";
  if (codec_name == "auto") {
    if (deps_.policy == nullptr) return absl::FailedPreconditionError("auto: no codec policy configured");
    KVS_ASSIGN_OR_RETURN(CodecPolicy::Choice ch,
                         deps_.policy->Choose(peer->address, geom.WithLayers(layers_per_chunk).raw_bytes(),
                                              chunks, QualityFloor{p.quality_floor, p.min_token_agreement},
                                              p.pipelined.value_or(options_.pipelined)));
    codec_name = ch.codec;
    st.codec_reason = ch.reason;
    if (deps_.metrics) deps_.metrics->kvs_prefill_auto_choice_total.With({{"codec", ch.codec}}).Increment();
  }
  if (!options_.codecs.empty() &&
      std::find(options_.codecs.begin(), options_.codecs.end(), codec_name) == options_.codecs.end()) {
    return absl::InvalidArgumentError(absl::StrCat("codec '", codec_name, "' is not allowed here (allowed: ",
                                                   absl::StrJoin(options_.codecs, ", "), ")"));
  }
  absl::StatusOr<std::unique_ptr<Codec>> codec = deps_.codecs->Create(codec_name);
  if (!codec.ok()) return absl::InvalidArgumentError(absl::StrCat("unknown codec: ", codec.status().message()));
  if (absl::Status ce = (*codec)->CanEncode(geom.WithLayers(layers_per_chunk)); !ce.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("codec ", codec_name, " cannot carry this KV: ", ce.message()));
  }
  r.codec = codec_name;
  st.codec = codec_name;
  const bool pipelined = p.pipelined.value_or(options_.pipelined);
  st.pipelined = pipelined;

  // ---- session on the decode peer ----------------------------------------------------------------
  r.stage = "open_session";
  control::OpenSessionParams op;
  op.request_id = p.request_id;
  op.model_fingerprint = model.fingerprint();
  op.geom = geom;
  op.dtype = DType::kF16;
  op.codec = codec_name;
  op.codec_params_digest = transfer::CodecParamsDigest(**codec);
  op.layers_per_chunk = layers_per_chunk;
  op.transport = deps_.transport_kind;
  op.frame_version = transfer::kFrameVersion;
  op.lease_ms = options_.lease_ms;
  auto rpc_deadline = [&] { return Earlier(r.deadline, absl::Now() + absl::Milliseconds(options_.rpc_timeout_ms)); };
  absl::StatusOr<control::SessionGrant> grant = peer->api->OpenSession(op, rpc_deadline());
  if (!grant.ok()) {
    if (deps_.metrics) {
      deps_.metrics->kvs_prefill_peer_errors_total
          .With({{"peer", peer->address}, {"code", CodeName(grant.status().code())}})
          .Increment();
    }
    return PeerError(grant.status(), peer->address, "OpenSession");
  }
  bool session_open = true;
  auto close_session = [&](absl::string_view reason) {
    if (!session_open) return;
    session_open = false;
    absl::StatusOr<bool> c = peer->api->CloseSession(grant->session_id, grant->token, reason,
                                                     absl::Now() + absl::Seconds(2));
    if (!c.ok()) KVS_LOG_DEBUG("close session {} on {}: {}", grant->session_id, peer->address, c.status().ToString());
  };
  auto fail = [&](absl::Status s, absl::string_view stage) {
    if (deps_.metrics && (s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded)) {
      deps_.metrics->kvs_prefill_peer_errors_total.With({{"peer", peer->address}, {"code", CodeName(s.code())}}).Increment();
    }
    close_session(absl::StrCat(stage, ": ", s.message()));
    return PeerError(s, peer->address, stage);
  };

  transfer::SessionParams sp;
  sp.session_id = grant->session_id;
  sp.token = grant->token;
  sp.request_id = grant->session_id;
  sp.geom = geom;
  sp.dtype = DType::kF16;
  sp.layers_per_chunk = layers_per_chunk;
  absl::StatusOr<transfer::Session> session = transfer::NegotiateSession(sp, **codec);
  if (!session.ok()) return fail(session.status(), "negotiate");
  if (session->chunks.size() != grant->chunk_count ||
      session->codec_params_digest != grant->codec_params_digest ||
      grant->frame_version != transfer::kFrameVersion) {
    return fail(absl::InternalError(absl::StrCat("session plan differs: decode planned ", grant->chunk_count,
                                                 " chunks, prefill ", session->chunks.size())),
                "negotiate");
  }

  // ---- data plane ------------------------------------------------------------------------------
  r.stage = "connect";
  transfer::FrameGate gate;
  transfer::ConnectionOptions copts;
  copts.validator = [&gate](const transfer::FrameHeader& h) { return gate.Check(h); };
  copts.recv_buffer_bytes = static_cast<size_t>(std::max<uint64_t>(4096, session->max_control_payload_bytes()));
  copts.recv_buffers = 2;
  copts.max_inflight_sends = static_cast<int>(std::max<int64_t>(1, options_.encode_buffers));
  absl::StatusOr<std::unique_ptr<transfer::Connection>> conn = deps_.transport->Connect(
      grant->endpoint, copts,
      std::min(absl::Milliseconds(options_.connect_timeout_ms), r.deadline - absl::Now()));
  if (!conn.ok()) {
    absl::Status s = conn.status();
    if (s.code() == absl::StatusCode::kDeadlineExceeded) s = absl::UnavailableError(s.message());
    return fail(s, "data-plane connect");
  }
  const transfer::TransportInfo tinfo = (*conn)->info();
  st.transport = tinfo.detail.empty() ? tinfo.kind : tinfo.detail;
  if (!options_.require_lane.empty() && tinfo.lane != options_.require_lane) {
    return fail(absl::FailedPreconditionError(absl::StrCat("data plane runs over lane '", tinfo.lane, "' (",
                                                           tinfo.detail, ") but require_lane is '",
                                                           options_.require_lane, "'")),
                "data-plane connect");
  }
  if (deps_.metrics) {
    deps_.metrics->kvs_prefill_transport_info.With({{"kind", tinfo.kind}, {"lane", tinfo.lane}}).Set(1);
  }

  // ---- prefill, first token, handoff -------------------------------------------------------------
  std::vector<uint16_t> k(static_cast<size_t>(geom.elements())), v(static_cast<size_t>(geom.elements()));
  MutableKvCacheView kv{{k.data(), geom, DType::kF16}, {v.data(), geom, DType::kF16}};
  transfer::SenderOptions so;
  so.encode_buffers = static_cast<int>(options_.encode_buffers);
  so.pipelined = pipelined;
  so.codec_pool = deps_.codec_pool;
  so.done_timeout = std::max(absl::Milliseconds(1), std::min(absl::Seconds(60), r.deadline - absl::Now()));
  transfer::KvSender sender(conn->get(), &gate, codec->get(), so);
  transfer::LayerProgress progress;
  absl::StatusOr<transfer::TransferStats> ts = absl::UnknownError("not sent");
  std::atomic<int64_t> t_kv_delivered{0};  // the sender got kDone: decode holds the decoded KV
  std::thread send_thread;
  Joiner joiner{&send_thread};
  // Layer-pipelined: the forward exports each layer into `kv` and marks it ready as soon as it is
  // computed, so chunk i is encoded and on the wire while later layers compute. Otherwise the
  // same export runs, and every layer is marked ready once the forward is done. Same bytes
  // either way (PrefillLayer::ExportF16 writes what KvCache::ExportF16 would).
  const bool layer_pipelined = pipelined && options_.layer_pipelined;
  st.layer_pipelined = layer_pipelined;
  if (pipelined) {
    // Chunk i leaves as soon as its layers are ready, while later work (later layers, sampling,
    // the first token's trip to the client) goes on.
    send_thread = std::thread([&] {
      ts = sender.Send(*session, kv, &progress);
      t_kv_delivered = transfer::MonotonicNowNs();
    });
  }

  r.stage = "prefill";
  const int64_t t_p0 = transfer::MonotonicNowNs();
  int64_t t_last_layer = 0;  // the last layer computed and exported (the whole KV exists)
  absl::StatusOr<PrefillResult> pre =
      model.model().Prefill(tokens, [&](const PrefillLayer& layer) -> absl::Status {
        KVS_RETURN_IF_ERROR(layer.ExportF16(kv));
        if (layer.layer + 1 == geom.layers) t_last_layer = transfer::MonotonicNowNs();
        if (layer_pipelined) progress.MarkReady(layer.layer + 1);
        return absl::OkStatus();
      });
  absl::Status export_status = pre.status();
  if (!export_status.ok()) {
    progress.Fail(export_status);
    if (send_thread.joinable()) send_thread.join();
    close_session("prefill failed");
    return Annotate(export_status, "prefill");
  }
  const int64_t t_p1 = transfer::MonotonicNowNs();  // prefill end: every layer computed and exported
  progress.MarkReady(geom.layers);
  st.prefill_ms = control::MsBetween(t_p0, t_p1);

  Sampler sampler = control::MakeSampler(p.sampling.temperature, p.sampling.top_p, p.sampling.seed, /*skip=*/0);
  const int32_t first = sampler.Sample(pre->last_logits);
  TokenPiece first_piece{first, model.tokenizer().DecodeToken(tokens.back(), first), 0};
  r.stage = "stream";
  absl::Status sink_status = (*r.sink)(first_piece);
  const int64_t t_first = transfer::MonotonicNowNs();
  st.ttft_ms = control::MsBetween(r.start_ns, t_first);
  if (!sink_status.ok()) {
    progress.Fail(sink_status);
    if (send_thread.joinable()) send_thread.join();
    (*conn)->Close();
    close_session("client went away");
    return sink_status;
  }

  r.stage = "handoff";
  if (!pipelined) {
    ts = sender.Send(*session, kv);
    t_kv_delivered = transfer::MonotonicNowNs();
  }
  if (send_thread.joinable()) send_thread.join();
  (*conn)->Close();
  if (!ts.ok()) {
    absl::Status s = ts.status();
    if (s.code() == absl::StatusCode::kUnavailable) {
      s = absl::UnavailableError(absl::StrCat("lost during the KV transfer: ", s.message()));
    }
    return fail(s, "KV transfer");
  }
  st.encode_ms = ts->encode_ms;
  st.queue_ms = ts->queue_ms;
  st.wire_ms = ts->wire_ms;
  st.decompress_ms = ts->decode_ms;
  // Handoff = the KV complete (layer-pipelined: its last layer exported, and earlier chunks are
  // across already; otherwise: the forward done, when every layer is marked ready) -> decode
  // ready (kDone back), both on this host's clock.
  const int64_t t_kv_complete = layer_pipelined ? t_last_layer : t_p1;
  st.handoff_ms = std::max(0.0, control::MsBetween(t_kv_complete, t_kv_delivered.load()));
  st.raw_bytes = static_cast<int64_t>(ts->bytes_raw);
  st.wire_bytes = static_cast<int64_t>(ts->bytes_wire);
  st.ratio = ts->ratio;
  st.chunks = ts->chunks;
  st.link_gbps = options_.link_gbps > 0 ? options_.link_gbps : ts->wire_gbps;
  if (st.link_gbps > 0) {
    transfer::PredictHandoff(st.link_gbps, &*ts);
    st.predicted_handoff_ms = pipelined ? ts->analytic.pipelined_ms : ts->analytic.sequential_ms;
    st.predicted_serial_ms = ts->analytic.sequential_ms;
  }
  // Every transfer, whatever its codec, feeds the auto policy's link EWMA for this peer: wire
  // bytes over the time the link carried them (the union of the chunks' [wire_begin, recv_end];
  // encode stalls do not count). The receiver's stamps are already on this host's clock
  // (KvSender removes the offset EstimatePeerClockOffsetNs bounds from the transfer's own frames:
  // exact on one host, within about the one-way latency across machines).
  // And its stage times refine the codec's speeds (decode: the peer's own timings).
  if (deps_.policy != nullptr) {
    deps_.policy->ObserveCodec(codec_name, static_cast<double>(ts->bytes_raw), ts->encode_ms,
                               ts->has_peer_timings ? ts->decode_ms : 0);
  }
  if (deps_.policy != nullptr && ts->wire_gbps > 0) {
    deps_.policy->ObserveLink(peer->address, ts->wire_gbps);
    if (deps_.metrics) {
      deps_.metrics->kvs_prefill_link_gbps.With({{"peer", peer->address}}).Set(deps_.policy->LinkGbps(peer->address));
    }
  }
  if (deps_.metrics) {
    deps_.metrics->kvs_prefill_handoff_seconds.With({{"codec", codec_name}}).Observe(st.handoff_ms / 1e3);
    deps_.metrics->kvs_prefill_prefill_seconds.With().Observe(st.prefill_ms / 1e3);
    deps_.metrics->kvs_prefill_ttft_seconds.With().Observe(st.ttft_ms / 1e3);
    deps_.metrics->kvs_prefill_compression_ratio.With({{"codec", codec_name}}).Observe(st.ratio);
    deps_.metrics->kvs_prefill_kv_raw_bytes_total.With({{"codec", codec_name}}).Increment(static_cast<double>(st.raw_bytes));
    deps_.metrics->kvs_prefill_kv_wire_bytes_total.With({{"codec", codec_name}}).Increment(static_cast<double>(st.wire_bytes));
  }

  // ---- generation on the decode peer -----------------------------------------------------------
  int64_t generated = 1;
  int64_t t_second = 0, t_last = t_first;
  if (model.IsStop(first) || p.max_new_tokens == 1) {
    st.finish_reason = model.IsStop(first) ? "eos" : "length";
    close_session("finished at the first token");
  } else {
    r.stage = "resume";
    control::ResumeParams rp;
    rp.session_id = grant->session_id;
    rp.token = grant->token;
    rp.first_token = first;
    rp.max_new_tokens = p.max_new_tokens;
    rp.sampling = p.sampling;
    rp.request_id = p.request_id;
    int32_t expect = 1;
    control::TokenSink relay = [&](const TokenPiece& piece) -> absl::Status {
      if (piece.index != expect) {
        return absl::InternalError(absl::StrCat("decode sent token index ", piece.index, ", expected ", expect));
      }
      ++expect;
      KVS_RETURN_IF_ERROR((*r.sink)(piece));
      const int64_t now = transfer::MonotonicNowNs();
      if (t_second == 0) t_second = now;
      t_last = now;
      ++generated;
      return absl::OkStatus();
    };
    absl::StatusOr<RequestStats> ds = peer->api->Resume(rp, relay, r.deadline);
    session_open = false;  // Resume consumes the session, whatever its outcome
    if (!ds.ok()) {
      if (ds.status().code() == absl::StatusCode::kCancelled) return ds.status();
      // A session the peer no longer holds is harmless to close again.
      session_open = true;
      return fail(ds.status(), "Resume");
    }
    st.finish_reason = ds->finish_reason;
    if (ds->generated_tokens != generated) {
      KVS_LOG_WARN("request {}: decode reports {} tokens, {} relayed", p.request_id, ds->generated_tokens, generated);
    }
  }
  st.generated_tokens = generated;
  if (t_second != 0) st.time_to_second_token_ms = control::MsBetween(r.start_ns, t_second);
  if (generated > 1) st.tpot_ms = control::MsBetween(t_first, t_last) / static_cast<double>(generated - 1);
  st.total_ms = control::MsBetween(r.start_ns, transfer::MonotonicNowNs());
  if (deps_.metrics) {
    deps_.metrics->kvs_prefill_tokens_generated_total.With().Increment(static_cast<double>(generated));
    if (generated > 1) deps_.metrics->kvs_prefill_tpot_seconds.With().Observe(st.tpot_ms / 1e3);
  }
  r.stage = "done";
  return st;
}

absl::StatusOr<control::ServerInfo> PrefillService::Info(absl::Time deadline) {
  (void)deadline;
  const control::ServingModel& model = *deps_.model;
  control::ServerInfo i;
  i.role = "prefill";
  i.model_name = model.name();
  i.model_fingerprint = model.fingerprint();
  i.layers = model.config().layers;
  i.kv_heads = model.config().kv_heads;
  i.head_dim = model.config().head_dim;
  i.max_context = model.max_context();
  i.vocab_size = model.config().vocab;
  i.codecs = options_.codecs.empty() ? deps_.codecs->Names() : options_.codecs;
  if (deps_.policy != nullptr) i.codecs.push_back("auto");
  i.transports = {std::string(control::TransportKindName(deps_.transport_kind))};
  i.default_codec = options_.codec;
  i.default_transport = i.transports.front();
  i.version = deps_.version;
  i.frame_version = transfer::kFrameVersion;
  for (const DecodePeer& p : deps_.peers) i.decode_peers.push_back(p.address);
  i.max_new_tokens_limit = options_.max_new_tokens_limit;
  i.max_prompt_tokens = options_.max_prompt_tokens > 0 ? std::min(options_.max_prompt_tokens, i.max_context - 1)
                                                       : i.max_context - 1;
  return i;
}

absl::Status PrefillService::CheckPeers(absl::Time deadline) {
  absl::Status first;
  for (DecodePeer& p : deps_.peers) {
    absl::StatusOr<control::ServerInfo> info = p.api->Info(deadline);
    absl::Status s;
    if (!info.ok()) {
      s = info.status();
    } else if (info->model_fingerprint != deps_.model->fingerprint()) {
      s = absl::FailedPreconditionError(absl::StrCat("decode peer ", p.address, " serves model ", info->model_name,
                                                     " (fingerprint ", info->model_fingerprint, "), this kvs-prefill ",
                                                     deps_.model->name(), " (", deps_.model->fingerprint(), ")"));
    }
    if (s.ok()) {
      KVS_LOG_INFO("decode peer {}: {} ({}), transports {}", p.address, info->model_name, info->version,
                   absl::StrJoin(info->transports, ","));
    } else {
      KVS_LOG_WARN("decode peer {}: {}", p.address, s.ToString());
      if (first.ok()) first = s;
    }
  }
  return first;
}

}  // namespace kvs::prefill
