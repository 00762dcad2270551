#include "services/decode/decode_service.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "services/transfer/pipeline.h"

namespace kvs::decode {

using control::RequestStats;
using control::TokenPiece;

namespace {

std::string CodeName(absl::StatusCode c) { return absl::StatusCodeToString(c); }

bool TokensEqual(const transfer::SessionToken& a, const transfer::SessionToken& b) {
  uint8_t diff = 0;  // constant time
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<uint8_t>(a[i] ^ b[i]);
  return diff == 0;
}

double Seconds(int64_t ns) { return static_cast<double>(ns) / 1e9; }

}  // namespace

struct DecodeService::SessionState {
  uint64_t id = 0;
  transfer::SessionToken token{};
  std::string request_id;
  std::shared_ptr<const transfer::Session> session;
  std::unique_ptr<Codec> codec;
  control::TransportKind transport = control::TransportKind::kTcp;
  std::unique_ptr<transfer::Listener> listener;
  std::vector<uint16_t> k, v;  // the destination KV, [L, H, S, D] fp16 each
  // The received keep mask, [L, S] (0 = a pruning codec evicted the position in that layer).
  // Written by the receiver thread before it publishes Rx::kReady, like k and v.
  std::vector<uint8_t> keep;
  absl::Duration lease;
  std::thread receiver;
  std::mutex join_mu;  // serializes joining `receiver`

  ~SessionState() {
    // The receiver thread holds a reference, so the last one may be dropped on that thread.
    if (receiver.joinable()) {
      if (receiver.get_id() == std::this_thread::get_id()) {
        receiver.detach();
      } else {
        receiver.join();
      }
    }
  }

  std::mutex mu;
  std::condition_variable cv;
  enum class Rx { kWaiting, kReady, kFailed };
  Rx rx ABSL_GUARDED_BY(mu) = Rx::kWaiting;
  bool resumed ABSL_GUARDED_BY(mu) = false;
  bool ended ABSL_GUARDED_BY(mu) = false;
  absl::Status end_reason ABSL_GUARDED_BY(mu);
  absl::Status failure ABSL_GUARDED_BY(mu);
  transfer::TransferStats rx_stats ABSL_GUARDED_BY(mu);
  transfer::Connection* conn ABSL_GUARDED_BY(mu) = nullptr;
  bool kv_arrived ABSL_GUARDED_BY(mu) = false;  // every chunk decoded (kDone may still be going out)
  // The lease runs while nothing happens: from OpenSession until the data connection arrives,
  // and again from the end of the transfer until Resume. While the KV is being received the
  // data plane's own timeouts and peer-loss detection govern instead.
  absl::Time lease_deadline ABSL_GUARDED_BY(mu);

  MutableKvCacheView dest() {
    return {{k.data(), session->geom, session->dtype}, {v.data(), session->geom, session->dtype}};
  }
};

DecodeService::DecodeService(const DecodeOptions& options, DecodeDeps deps)
    : options_(options), deps_(std::move(deps)) {
  if (deps_.metrics != nullptr) {
    if (deps_.tcp) deps_.metrics->kvs_decode_transport_info.With({{"kind", "tcp"}}).Set(1);
    if (deps_.ucx) deps_.metrics->kvs_decode_transport_info.With({{"kind", "ucx"}}).Set(1);
  }
  if (options_.reap_interval_ms > 0) reaper_ = std::thread([this] { ReaperLoop(); });
}

DecodeService::~DecodeService() { Shutdown(); }

transfer::Transport* DecodeService::TransportFor(control::TransportKind k) const {
  switch (k) {
    case control::TransportKind::kTcp:
      return deps_.tcp;
    case control::TransportKind::kUcx:
      return deps_.ucx;
    case control::TransportKind::kUnspecified:
      return deps_.tcp != nullptr ? deps_.tcp : deps_.ucx;
  }
  return nullptr;
}

absl::StatusOr<control::SessionGrant> DecodeService::OpenSession(const control::OpenSessionParams& p,
                                                                 absl::Time deadline) {
  (void)deadline;  // admission does not block
  auto reject = [&](absl::Status s) {
    if (deps_.metrics) deps_.metrics->kvs_decode_sessions_rejected_total.With({{"code", CodeName(s.code())}}).Increment();
    KVS_LOG_DEBUG("open session for request {} refused: {}", p.request_id, s.ToString());
    return s;
  };
  const control::ServingModel& model = *deps_.model;
  const ModelConfig& mc = model.config();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!admitting_) return reject(absl::UnavailableError("kvs-decode is draining; not admitting sessions"));
  }
  if (p.model_fingerprint != model.fingerprint()) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
        "model fingerprint mismatch: the prefill side serves '", p.model_fingerprint,
        "', this kvs-decode serves '", model.fingerprint(), "' (", model.name(), ")")));
  }
  if (p.frame_version != transfer::kFrameVersion) {
    return reject(absl::FailedPreconditionError(absl::StrCat("data-plane frame version ", p.frame_version,
                                                             " is not supported (this kvs-decode speaks ",
                                                             static_cast<int>(transfer::kFrameVersion), ")")));
  }
  if (p.geom.layers != mc.layers || p.geom.heads != mc.kv_heads || p.geom.head_dim != mc.head_dim) {
    return reject(absl::FailedPreconditionError(
        absl::StrCat("KV geometry ", p.geom.ToString(), " does not fit model ", model.name(), " (L=",
                     mc.layers, ", H=", mc.kv_heads, ", D=", mc.head_dim, ")")));
  }
  const int64_t max_context = options_.max_context > 0 ? options_.max_context : model.max_context();
  if (p.geom.tokens < 1 || p.geom.tokens >= max_context) {
    return reject(absl::InvalidArgumentError(absl::StrCat("prompt of ", p.geom.tokens,
                                                          " tokens is outside [1, ", max_context - 1,
                                                          "] (context ", max_context, ")")));
  }
  if (absl::Status g = ValidateGeometry(p.geom); !g.ok()) return reject(g);
  if (p.layers_per_chunk < 1 || p.layers_per_chunk > p.geom.layers) {
    return reject(absl::InvalidArgumentError(
        absl::StrCat("layers_per_chunk ", p.layers_per_chunk, " is outside [1, ", p.geom.layers, "]")));
  }
  if (p.tokens_per_chunk != 0) {
    return reject(absl::UnimplementedError("token-split chunks are not supported (tokens_per_chunk must be 0)"));
  }
  if (!options_.codecs.empty() &&
      std::find(options_.codecs.begin(), options_.codecs.end(), p.codec) == options_.codecs.end()) {
    return reject(absl::InvalidArgumentError(absl::StrCat("codec '", p.codec, "' is not allowed here (allowed: ",
                                                          absl::StrJoin(options_.codecs, ", "), ")")));
  }
  CodecOptions co;
  co.fp8_compat = p.fp8_compat;
  co.prune_fill = p.prune_fill_zero ? PruneFill::kZero : PruneFill::kMask;
  absl::StatusOr<std::unique_ptr<Codec>> codec = deps_.codecs->Create(p.codec, co);
  if (!codec.ok()) {
    return reject(absl::InvalidArgumentError(absl::StrCat("unknown codec: ", codec.status().message())));
  }
  if (transfer::CodecParamsDigest(**codec) != p.codec_params_digest) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
        "codec '", p.codec, "' parameters differ between prefill and decode (params digest mismatch)")));
  }
  transfer::Transport* transport = TransportFor(p.transport);
  if (transport == nullptr) {
    return reject(absl::FailedPreconditionError(
        absl::StrCat("transport ", control::TransportKindName(p.transport), " is not served here (serves: ",
                     absl::StrJoin(options_.transports, ", "), ")")));
  }

  auto s = std::make_shared<SessionState>();
  s->id = transfer::RandomId();
  s->token = transfer::RandomSessionToken();
  s->request_id = p.request_id;
  s->transport = transport == deps_.tcp ? control::TransportKind::kTcp : control::TransportKind::kUcx;
  transfer::SessionParams sp;
  sp.session_id = s->id;
  sp.token = s->token;
  sp.request_id = s->id;  // both sides use the session id as the frames' request id
  sp.geom = p.geom;
  sp.dtype = p.dtype;
  sp.layers_per_chunk = p.layers_per_chunk;
  sp.tokens_per_chunk = 0;
  absl::StatusOr<transfer::Session> session = transfer::NegotiateSession(sp, **codec);
  if (!session.ok()) return reject(session.status());
  s->session = std::make_shared<transfer::Session>(*std::move(session));
  s->codec = *std::move(codec);
  absl::StatusOr<std::unique_ptr<transfer::Listener>> listener = transport->Listen();
  if (!listener.ok()) return reject(Annotate(listener.status(), "data-plane listen"));
  s->listener = *std::move(listener);

  const int64_t lease_ms =
      p.lease_ms == 0 ? options_.lease_ms : std::min<int64_t>(p.lease_ms, options_.max_lease_ms);
  s->lease = absl::Milliseconds(lease_ms);
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->lease_deadline = Now() + s->lease;
  }
  auto full = [&] {
    return absl::ResourceExhaustedError(absl::StrCat("kvs-decode holds ", sessions_.size(),
                                                     " sessions (max_sessions ", options_.max_sessions, ")"));
  };
  {
    std::lock_guard<std::mutex> l(mu_);
    if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) return reject(full());
  }
  // The KV buffer is touched outside the table's lock (it can be large); capacity is checked
  // again below, so a race only wastes this allocation.
  s->k.assign(static_cast<size_t>(p.geom.elements()), 0);
  s->v.assign(static_cast<size_t>(p.geom.elements()), 0);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) return reject(full());
    gate_.Register(s->session);
    // Started under mu_: whoever finds the session in the table also sees its thread.
    s->receiver = std::thread([this, s] { ReceiveLoop(s); });
    sessions_[s->id] = s;
    if (deps_.metrics) deps_.metrics->kvs_decode_sessions_active.With().Set(static_cast<double>(sessions_.size()));
  }

  if (deps_.metrics) deps_.metrics->kvs_decode_sessions_opened_total.With({{"codec", p.codec}}).Increment();
  control::SessionGrant g;
  g.session_id = s->id;
  g.token = s->token;
  g.transport = s->transport;
  g.endpoint = s->listener->endpoint();
  g.transport_detail = std::string(transport->name());
  g.lease_ms = lease_ms;
  g.codec_params_digest = s->session->codec_params_digest;
  g.chunk_count = static_cast<uint32_t>(s->session->chunks.size());
  g.frame_version = transfer::kFrameVersion;
  KVS_LOG_DEBUG("session {} open: request {}, {} tokens, codec {}, {} chunks, endpoint {}", s->id,
                p.request_id, p.geom.tokens, p.codec, g.chunk_count, g.endpoint);
  return g;
}

void DecodeService::ReceiveLoop(std::shared_ptr<SessionState> s) {
  const transfer::Session& session = *s->session;
  transfer::ConnectionOptions copts;
  copts.validator = [this](const transfer::FrameHeader& h) { return gate_.Check(h); };
  // identity chunks go straight into the session's KV buffer (no receive-buffer copy).
  copts.placer = [this](const transfer::FrameHeader& h, transfer::PayloadPlacement* out) {
    return gate_.Place(h, out);
  };
  copts.recv_buffer_bytes = static_cast<size_t>(
      std::max(session.max_payload_bytes(), session.max_control_payload_bytes()));
  copts.recv_buffers = static_cast<int>(options_.pipelined
                                            ? options_.recv_buffers
                                            : std::max<int64_t>(options_.recv_buffers,
                                                                static_cast<int64_t>(session.chunks.size())));

  auto fail = [&](absl::Status st) {
    std::lock_guard<std::mutex> l(s->mu);
    s->rx = SessionState::Rx::kFailed;
    s->failure = std::move(st);
    s->lease_deadline = Now() + s->lease;  // Resume may still come to collect the reason
    s->cv.notify_all();
  };

  std::unique_ptr<transfer::Connection> conn;
  while (true) {
    {
      std::lock_guard<std::mutex> l(s->mu);
      if (s->ended) return;
    }
    // Short slices so that End() (close, lease expiry, shutdown) is noticed promptly.
    absl::StatusOr<std::unique_ptr<transfer::Connection>> c =
        s->listener->Accept(copts, absl::Milliseconds(200));
    if (c.ok()) {
      conn = *std::move(c);
      break;
    }
    if (c.status().code() != absl::StatusCode::kDeadlineExceeded) {
      fail(Annotate(c.status(), "data-plane accept"));
      return;
    }
  }
  {
    std::lock_guard<std::mutex> l(s->mu);
    if (s->ended) {
      conn->Close();
      return;
    }
    s->conn = conn.get();
  }
  const transfer::TransportInfo& info = conn->info();
  if (!options_.require_lane.empty() && info.lane != options_.require_lane) {
    absl::Status st = absl::FailedPreconditionError(
        absl::StrCat("data plane runs over lane '", info.lane, "' (", info.detail, ") but require_lane is '",
                     options_.require_lane, "'"));
    KVS_LOG_ERROR("session {}: {}", s->id, st.ToString());
    {
      std::lock_guard<std::mutex> l(s->mu);
      s->conn = nullptr;
    }
    conn->Close();
    fail(st);
    return;
  }

  transfer::ReceiverOptions ro;
  ro.pipelined = options_.pipelined;
  ro.codec_pool = deps_.codec_pool;
  // The lease restarts when the KV has arrived, before the sender hears so (kDone).
  ro.on_received = [this, &s] {
    std::lock_guard<std::mutex> l(s->mu);
    s->kv_arrived = true;
    s->lease_deadline = Now() + s->lease;
  };
  transfer::KvReceiver rx(conn.get(), &gate_, s->codec.get(), ro);
  absl::StatusOr<transfer::TransferStats> stats = rx.Receive(session, s->dest(), &s->keep);
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->conn = nullptr;
    // Success: the lease restarted in on_received. Failure: Resume may still come for the reason.
    if (!stats.ok()) s->lease_deadline = Now() + s->lease;
  }
  conn->Close();
  const std::string codec(s->codec->name());
  if (deps_.metrics) {
    deps_.metrics->kvs_decode_transfers_total
        .With({{"codec", codec}, {"code", CodeName(stats.status().code())}})
        .Increment();
  }
  if (!stats.ok()) {
    absl::Status st = stats.status();
    if (st.code() == absl::StatusCode::kUnavailable) {
      st = absl::UnavailableError(absl::StrCat("prefill peer lost during the KV transfer: ", st.message()));
    }
    fail(st);
    return;
  }
  if (deps_.metrics) {
    deps_.metrics->kvs_decode_kv_wire_bytes_total.With({{"codec", codec}}).Increment(static_cast<double>(stats->bytes_wire));
    deps_.metrics->kvs_decode_kv_raw_bytes_total.With({{"codec", codec}}).Increment(static_cast<double>(stats->bytes_raw));
    deps_.metrics->kvs_decode_decompress_seconds.With({{"codec", codec}}).Observe(stats->decode_ms / 1e3);
    deps_.metrics->kvs_decode_receive_seconds.With({{"codec", codec}}).Observe(stats->handoff_ms / 1e3);
    deps_.metrics->kvs_decode_transport_info.With({{"kind", std::string(info.kind)}, {"lane", info.lane}}).Set(1);
  }
  std::lock_guard<std::mutex> l(s->mu);
  s->rx = SessionState::Rx::kReady;
  s->rx_stats = *std::move(stats);  // Resume must come within the lease (restarted in on_received)
  s->cv.notify_all();
}

std::shared_ptr<DecodeService::SessionState> DecodeService::Find(uint64_t id,
                                                                  const transfer::SessionToken& token,
                                                                  absl::Status* error) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    *error = absl::NotFoundError(absl::StrCat("session ", id, " is unknown, closed or expired"));
    return nullptr;
  }
  if (!TokensEqual(it->second->token, token)) {
    *error = absl::UnauthenticatedError(absl::StrCat("wrong token for session ", id));
    return nullptr;
  }
  return it->second;
}

void DecodeService::End(std::shared_ptr<SessionState> s, absl::Status why) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = sessions_.find(s->id);
    if (it != sessions_.end() && it->second == s) sessions_.erase(it);
    if (deps_.metrics) deps_.metrics->kvs_decode_sessions_active.With().Set(static_cast<double>(sessions_.size()));
  }
  {
    std::lock_guard<std::mutex> l(s->mu);
    if (!s->ended) {
      s->ended = true;
      s->end_reason = why;
      if (s->conn != nullptr) s->conn->Close();
      s->cv.notify_all();
    }
  }
  gate_.Unregister(s->id);
  if (s->receiver.joinable() && s->receiver.get_id() != std::this_thread::get_id()) {
    std::lock_guard<std::mutex> jl(s->join_mu);
    if (s->receiver.joinable()) s->receiver.join();
  }
}

absl::StatusOr<RequestStats> DecodeService::Resume(const control::ResumeParams& p,
                                                   const control::TokenSink& sink,
                                                   absl::Time deadline) {
  auto result = [&](absl::StatusOr<RequestStats> r) {
    if (deps_.metrics) deps_.metrics->kvs_decode_resumes_total.With({{"code", CodeName(r.status().code())}}).Increment();
    return r;
  };
  absl::Status err;
  std::shared_ptr<SessionState> s = Find(p.session_id, p.token, &err);
  if (s == nullptr) return result(err);

  const control::ServingModel& model = *deps_.model;
  const int64_t max_context = options_.max_context > 0 ? options_.max_context : model.max_context();
  if (p.max_new_tokens < 1 || p.max_new_tokens > options_.max_new_tokens_limit) {
    return result(absl::InvalidArgumentError(absl::StrCat("max_new_tokens ", p.max_new_tokens,
                                                          " is outside [1, ", options_.max_new_tokens_limit, "]")));
  }
  if (s->session->geom.tokens + p.max_new_tokens > max_context) {
    return result(absl::InvalidArgumentError(absl::StrCat(
        "prompt (", s->session->geom.tokens, " tokens) + max_new_tokens (", p.max_new_tokens,
        ") exceeds the context of ", max_context)));
  }
  if (p.first_token < 0 || p.first_token >= model.tokenizer().vocab_size()) {
    return result(absl::InvalidArgumentError(absl::StrCat("first_token ", p.first_token, " is not in the vocabulary")));
  }
  KVS_RETURN_IF_ERROR(control::ValidateSampling(p.sampling));

  {
    std::unique_lock<std::mutex> l(s->mu);
    if (s->resumed) return result(absl::FailedPreconditionError(absl::StrCat("session ", s->id, " was already resumed")));
    s->resumed = true;
    // Wait for the KV (bounded slices: infinite deadlines are not safe for wait_until).
    while (s->rx == SessionState::Rx::kWaiting && !s->ended) {
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      s->cv.wait_for(l, absl::ToChronoMilliseconds(std::min(left, absl::Seconds(1))) +
                            std::chrono::milliseconds(1));
    }
  }
  absl::Status wait_status;
  {
    std::lock_guard<std::mutex> l(s->mu);
    if (s->ended) {
      wait_status = absl::AbortedError(absl::StrCat("session ", s->id, " ended: ", s->end_reason.ToString()));
    } else if (s->rx == SessionState::Rx::kFailed) {
      wait_status = s->failure;
    } else if (s->rx == SessionState::Rx::kWaiting) {
      wait_status = absl::DeadlineExceededError(
          absl::StrCat("session ", s->id, ": the KV did not arrive before the call's deadline"));
    }
  }
  if (!wait_status.ok()) {
    End(s, wait_status);
    return result(wait_status);
  }
  absl::StatusOr<RequestStats> stats = Generate(*s, p, sink, deadline);
  End(s, stats.ok() ? absl::OkStatus() : stats.status());
  return result(stats);
}

absl::StatusOr<RequestStats> DecodeService::Generate(SessionState& s, const control::ResumeParams& p,
                                                     const control::TokenSink& sink,
                                                     absl::Time deadline) {
  const control::ServingModel& model = *deps_.model;
  transfer::TransferStats rx;
  {
    std::lock_guard<std::mutex> l(s.mu);
    rx = s.rx_stats;
  }
  KvCacheView view = s.dest();
  if (deps_.on_kv_received) deps_.on_kv_received(view, s.keep);
  // Pruned positions stay out of attention (per layer, as each chunk's payload chose them)
  // instead of being attended as zeros.
  const int64_t evicted = std::count(s.keep.begin(), s.keep.end(), uint8_t{0});
  absl::StatusOr<KvCache> cache =
      model.model().ImportF16(view, evicted > 0 ? absl::MakeConstSpan(s.keep) : absl::Span<const uint8_t>());
  if (!cache.ok()) return Annotate(cache.status(), "importing the received KV");
  if (evicted > 0) {
    KVS_LOG_DEBUG("session {}: {} of {} (layer, position) entries evicted by {}, masked out of attention", s.id,
                  evicted, s.keep.size(), rx.codec);
  }
  std::vector<uint16_t>().swap(s.k);  // the model holds its own copy now
  std::vector<uint16_t>().swap(s.v);
  std::vector<uint8_t>().swap(s.keep);

  Sampler sampler = control::MakeSampler(p.sampling.temperature, p.sampling.top_p, p.sampling.seed,
                                         /*skip=*/1);
  RequestStats st;
  st.request_id = p.request_id;
  st.codec = rx.codec;
  st.transport = rx.transport;
  st.pipelined = rx.pipelined;
  st.prompt_tokens = s.session->geom.tokens;
  st.decompress_ms = rx.decode_ms;
  st.chunks = rx.chunks;
  st.raw_bytes = static_cast<int64_t>(rx.bytes_raw);
  st.wire_bytes = static_cast<int64_t>(rx.bytes_wire);
  st.ratio = rx.ratio;
  st.finish_reason = "length";

  int32_t prev = p.first_token;
  int generated = 1;
  int64_t step_ns_total = 0;
  if (model.IsStop(prev)) st.finish_reason = "eos";
  while (st.finish_reason != "eos" && generated < p.max_new_tokens) {
    {
      std::lock_guard<std::mutex> l(s.mu);
      if (s.ended) return absl::AbortedError(absl::StrCat("session ", s.id, " closed: ", s.end_reason.ToString()));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("deadline reached after ", generated, " tokens"));
    }
    const int64_t t0 = transfer::MonotonicNowNs();
    absl::StatusOr<std::vector<float>> logits = model.model().Step(&*cache, prev);
    if (!logits.ok()) return Annotate(logits.status(), "decode step");
    const int32_t t = sampler.Sample(*logits);
    const int64_t dt = transfer::MonotonicNowNs() - t0;
    step_ns_total += dt;
    if (deps_.metrics) deps_.metrics->kvs_decode_step_seconds.With().Observe(Seconds(dt));
    TokenPiece piece{t, model.tokenizer().DecodeToken(prev, t), generated};
    KVS_RETURN_IF_ERROR(sink(piece));
    ++generated;
    prev = t;
    if (model.IsStop(t)) st.finish_reason = "eos";
  }
  if (deps_.metrics) deps_.metrics->kvs_decode_tokens_generated_total.With().Increment(generated - 1);
  st.generated_tokens = generated;
  st.tpot_ms = generated > 1 ? static_cast<double>(step_ns_total) / 1e6 / (generated - 1) : 0;
  return st;
}

absl::StatusOr<bool> DecodeService::CloseSession(uint64_t session_id,
                                                 const transfer::SessionToken& token,
                                                 absl::string_view reason, absl::Time deadline) {
  (void)deadline;
  absl::Status err;
  std::shared_ptr<SessionState> s = Find(session_id, token, &err);
  if (s == nullptr) {
    if (err.code() == absl::StatusCode::kNotFound) return false;  // idempotent
    return err;
  }
  if (deps_.metrics) deps_.metrics->kvs_decode_sessions_closed_total.With().Increment();
  KVS_LOG_DEBUG("session {} closed by the peer: {}", session_id, std::string(reason));
  End(s, absl::CancelledError(absl::StrCat("closed by the peer: ", reason)));
  return true;
}

absl::StatusOr<control::ServerInfo> DecodeService::Info(absl::Time deadline) {
  (void)deadline;
  const control::ServingModel& model = *deps_.model;
  control::ServerInfo i;
  i.role = "decode";
  i.model_name = model.name();
  i.model_fingerprint = model.fingerprint();
  i.layers = model.config().layers;
  i.kv_heads = model.config().kv_heads;
  i.head_dim = model.config().head_dim;
  i.max_context = options_.max_context > 0 ? options_.max_context : model.max_context();
  i.vocab_size = model.config().vocab;
  i.codecs = options_.codecs.empty() ? deps_.codecs->Names() : options_.codecs;
  i.transports = options_.transports;
  i.default_transport = options_.transports.empty() ? "" : options_.transports.front();
  i.version = deps_.version;
  i.frame_version = transfer::kFrameVersion;
  i.max_new_tokens_limit = options_.max_new_tokens_limit;
  i.max_prompt_tokens = i.max_context - 1;
  return i;
}

int DecodeService::ReclaimExpired() {
  const absl::Time now = Now();
  std::vector<std::shared_ptr<SessionState>> expired;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [id, s] : sessions_) {
      std::lock_guard<std::mutex> sl(s->mu);
      if (!s->resumed && (s->conn == nullptr || s->kv_arrived) && s->lease_deadline <= now) expired.push_back(s);
    }
  }
  for (auto& s : expired) {
    KVS_LOG_WARN("session {} (request {}) reclaimed: lease expired before Resume", s->id, s->request_id);
    if (deps_.metrics) deps_.metrics->kvs_decode_sessions_reclaimed_total.With().Increment();
    End(s, absl::DeadlineExceededError("lease expired before Resume"));
  }
  return static_cast<int>(expired.size());
}

void DecodeService::ReaperLoop() {
  std::unique_lock<std::mutex> l(reaper_mu_);
  while (!reaper_stop_) {
    reaper_cv_.wait_for(l, std::chrono::milliseconds(options_.reap_interval_ms));
    if (reaper_stop_) break;
    l.unlock();
    ReclaimExpired();
    l.lock();
  }
}

void DecodeService::StopAdmitting() {
  std::lock_guard<std::mutex> l(mu_);
  admitting_ = false;
}

int DecodeService::active_sessions() const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<int>(sessions_.size());
}

void DecodeService::Shutdown() {
  {
    std::lock_guard<std::mutex> l(reaper_mu_);
    reaper_stop_ = true;
    reaper_cv_.notify_all();
  }
  if (reaper_.joinable()) reaper_.join();
  std::vector<std::shared_ptr<SessionState>> all;
  {
    std::lock_guard<std::mutex> l(mu_);
    admitting_ = false;
    for (auto& [id, s] : sessions_) all.push_back(s);
  }
  for (auto& s : all) End(s, absl::AbortedError("kvs-decode is shutting down"));
}

}  // namespace kvs::decode
