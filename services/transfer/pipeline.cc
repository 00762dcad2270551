#include "services/transfer/pipeline.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "kernels/format/payload.h"
#include "services/transfer/crc32c.h"

namespace kvs::transfer {
namespace {

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

// cv.wait_for with an absl::Duration; an infinite (or absurdly long) timeout waits forever
// (std::chrono's max would overflow inside wait_for).
template <typename Pred>
bool WaitWithTimeout(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                     absl::Duration timeout, Pred pred) {
  if (timeout >= absl::Hours(24 * 365)) {
    cv.wait(lock, pred);
    return true;
  }
  return cv.wait_for(lock, absl::ToChronoNanoseconds(std::max(timeout, absl::ZeroDuration())), pred);
}

absl::Status CheckKvMatchesSession(const KvGeometry& g, DType dtype, const Session& s,
                                   const Codec& codec) {
  if (g != s.geom) {
    return absl::InvalidArgumentError(absl::StrCat("kv geometry ", g.ToString(),
                                                   " differs from the session's ", s.geom.ToString()));
  }
  if (dtype != s.dtype) return absl::InvalidArgumentError("kv dtype differs from the session's");
  if (codec.info().id != s.codec || CodecParamsDigest(codec) != s.codec_params_digest) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec ", codec.name(), " is not the session's codec"));
  }
  if (s.chunks.empty()) return absl::InvalidArgumentError("session has no chunks");
  return absl::OkStatus();
}

// The 32-byte payload header the identity codec writes for a chunk of geometry g.
PayloadHeader IdentityPayloadHeader(const KvGeometry& g, DType dtype) {
  PayloadHeader h{};
  h.magic = kPayloadMagic;
  h.version = kPayloadVersion;
  h.codec = static_cast<uint8_t>(CodecId::kIdentity);
  h.dtype = static_cast<uint8_t>(dtype);
  h.flags = 0;
  h.layers = static_cast<uint32_t>(g.layers);
  h.heads = static_cast<uint32_t>(g.heads);
  h.tokens = static_cast<uint32_t>(g.tokens);
  h.head_dim = static_cast<uint32_t>(g.head_dim);
  h.reserved = 0;
  h.body_bytes = static_cast<uint32_t>(4 * g.elements());
  return h;
}

// identity chunks whose payload is exactly header + K slab + V slab (body fits the u32 field).
bool IdentityZeroCopyApplies(const Codec& codec, const Session& s) {
  if (codec.info().id != CodecId::kIdentity) return false;
  for (const ChunkSpec& c : s.chunks) {
    if (c.raw_bytes > 0xFFFFFFFFull || c.max_payload_bytes != kPayloadHeaderBytes + c.raw_bytes) return false;
  }
  return true;
}

size_t MaxChunkLayers(const Session& s) {
  size_t m = 1;
  for (const ChunkSpec& c : s.chunks) m = std::max<size_t>(m, c.layer_end - c.layer_begin);
  return m;
}

// Sends a control frame and waits for its completion (bounded by `timeout`).
absl::Status SendControl(Connection* conn, const Session& s, FrameKind kind,
                         const std::vector<uint8_t>& payload, absl::Duration timeout) {
  FrameHeader h = MakeControlHeader(s, kind, payload);
  h.sender_ts_ns = MonotonicNowNs();
  SealFrameHeader(&h);
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  absl::Status result;
  struct Ctx {
    std::mutex* mu;
    std::condition_variable* cv;
    bool* done;
    absl::Status* result;
  } ctx{&mu, &cv, &done, &result};
  KVS_RETURN_IF_ERROR(conn->Send(h, payload, [c = &ctx](const SendResult& r) {
    std::lock_guard<std::mutex> lock(*c->mu);
    *c->result = r.status;
    *c->done = true;
    c->cv->notify_all();
  }));
  std::unique_lock<std::mutex> lock(mu);
  if (!WaitWithTimeout(cv, lock, timeout, [&] { return done; })) {
    // The transport still references `payload` and `ctx`: it must finish before we return.
    lock.unlock();
    conn->Close();
    lock.lock();
    cv.wait(lock, [&] { return done; });
    return absl::DeadlineExceededError("control frame was not sent in time");
  }
  return result;
}

// State shared with the transport's completion callbacks of one Send().
struct SendState {
  std::mutex mu;
  std::condition_variable cv;
  int submitted ABSL_GUARDED_BY(mu) = 0;
  int completed ABSL_GUARDED_BY(mu) = 0;
  absl::Status first_error ABSL_GUARDED_BY(mu);
  std::vector<PooledBuffer> buffers ABSL_GUARDED_BY(mu);
  std::vector<ChunkTiming>* timings = nullptr;
};

}  // namespace

int64_t MonotonicNowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void SummarizeTimings(int64_t start_ns, int64_t end_ns, TransferStats* st) {
  st->chunks = static_cast<int>(st->chunk_timings.size());
  st->bytes_raw = st->bytes_wire = 0;
  int64_t enc = 0, dec = 0, queue = 0;
  std::vector<std::pair<int64_t, int64_t>> wire;
  for (const ChunkTiming& t : st->chunk_timings) {
    st->bytes_raw += t.raw_bytes;
    st->bytes_wire += t.wire_bytes;
    enc += t.encode_end_ns - t.encode_begin_ns;
    dec += t.decode_end_ns - t.decode_begin_ns;
    if (t.wire_begin_ns && t.encode_end_ns) queue += std::max<int64_t>(0, t.wire_begin_ns - t.encode_end_ns);
    if (t.decode_begin_ns && t.recv_end_ns) queue += std::max<int64_t>(0, t.decode_begin_ns - t.recv_end_ns);
    const int64_t wb = t.wire_begin_ns ? t.wire_begin_ns : t.recv_begin_ns;
    const int64_t we = t.recv_end_ns ? t.recv_end_ns : t.wire_end_ns;
    if (wb && we > wb) wire.emplace_back(wb, we);
  }
  std::sort(wire.begin(), wire.end());
  int64_t wire_ns = 0, cur_b = 0, cur_e = 0;
  for (const auto& [b, e] : wire) {
    if (cur_e <= b) {
      wire_ns += cur_e - cur_b;
      cur_b = b;
      cur_e = e;
    } else {
      cur_e = std::max(cur_e, e);
    }
  }
  wire_ns += cur_e - cur_b;
  st->encode_ms = Ms(enc);
  st->decode_ms = Ms(dec);
  st->queue_ms = Ms(queue);
  st->wire_ms = Ms(wire_ns);
  st->handoff_ms = Ms(end_ns - start_ns);
  st->ratio = st->bytes_wire ? static_cast<double>(st->bytes_raw) / st->bytes_wire : 0;
  st->goodput_gbps = st->handoff_ms > 0 ? 8.0 * st->bytes_raw / (st->handoff_ms * 1e6) : 0;
  st->wire_gbps = st->wire_ms > 0 ? 8.0 * st->bytes_wire / (st->wire_ms * 1e6) : 0;
}

namespace {
// Receiver stamps from the wire go into int64 arithmetic (offsets, differences, sums): each must be
// within [0, 2^62) ns (146 years of uptime) and ordered within its chunk, or none is used.
bool PlausiblePeerTimings(absl::Span<const RxChunkTiming> rx) {
  constexpr int64_t kMax = int64_t{1} << 62;
  auto in_range = [](int64_t t) { return t >= 0 && t < kMax; };
  for (const RxChunkTiming& r : rx) {
    if (!in_range(r.recv_begin_ns) || !in_range(r.recv_end_ns) || !in_range(r.decode_begin_ns) ||
        !in_range(r.decode_end_ns)) {
      return false;
    }
    if (r.recv_end_ns < r.recv_begin_ns || r.decode_end_ns < r.decode_begin_ns) return false;
  }
  return true;
}
}  // namespace

int64_t EstimatePeerClockOffsetNs(absl::Span<const ChunkTiming> t, int64_t done_arrival_ns) {
  int64_t hi = std::numeric_limits<int64_t>::max();
  int64_t lo = std::numeric_limits<int64_t>::min();
  for (const ChunkTiming& c : t) {
    if (c.wire_begin_ns != 0 && c.recv_begin_ns != 0) hi = std::min(hi, c.recv_begin_ns - c.wire_begin_ns);
    if (c.decode_end_ns != 0 && done_arrival_ns != 0) lo = std::max(lo, c.decode_end_ns - done_arrival_ns);
  }
  const bool has_hi = hi != std::numeric_limits<int64_t>::max();
  const bool has_lo = lo != std::numeric_limits<int64_t>::min();
  if (!has_hi && !has_lo) return 0;
  if (!has_hi) return lo > 0 ? lo : 0;
  if (!has_lo) return hi < 0 ? hi : 0;
  if (lo <= 0 && 0 <= hi) return 0;
  return lo / 2 + hi / 2;  // lo > hi cannot happen causally; the midpoint is still the best guess
}

void PredictHandoff(double link_gbps, TransferStats* st) {
  AnalyticPrediction& a = st->analytic;
  a = {};
  a.link_gbps = link_gbps;
  const auto& ts = st->chunk_timings;
  if (link_gbps <= 0 || ts.empty()) return;
  const double n = static_cast<double>(ts.size());
  double sum_c = 0, sum_x = 0, sum_d = 0;
  for (const ChunkTiming& t : ts) {
    sum_c += Ms(t.encode_end_ns - t.encode_begin_ns);
    sum_d += Ms(t.decode_end_ns - t.decode_begin_ns);
    sum_x += 8.0 * t.wire_bytes / (link_gbps * 1e6);
  }
  const ChunkTiming& t0 = ts.front();
  const double c0 = Ms(t0.encode_end_ns - t0.encode_begin_ns);
  const double d0 = Ms(t0.decode_end_ns - t0.decode_begin_ns);
  const double x0 = 8.0 * t0.wire_bytes / (link_gbps * 1e6);
  a.transfer_ms = sum_x;
  a.raw_ms = 8.0 * st->bytes_raw / (link_gbps * 1e6);
  a.sequential_ms = sum_c + sum_x + sum_d;
  a.pipelined_ms = (c0 + x0 + d0) + (n - 1) * std::max({sum_c / n, sum_x / n, sum_d / n});
}

// ---- LayerProgress ------------------------------------------------------------------------------

void LayerProgress::MarkReady(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  if (n > ready_) ready_ = n;
  cv_.notify_all();
}

void LayerProgress::Fail(absl::Status s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failed_.ok()) failed_ = s.ok() ? absl::UnknownError("producer failed") : std::move(s);
  cv_.notify_all();
}

absl::Status LayerProgress::WaitFor(int64_t n, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!WaitWithTimeout(cv_, lock, timeout, [&] { return ready_ >= n || !failed_.ok(); })) {
    return absl::DeadlineExceededError(absl::StrCat("layers [0, ", n, ") not ready in time"));
  }
  return failed_;
}

// ---- KvSender ------------------------------------------------------------------------------------

KvSender::KvSender(Connection* conn, FrameGate* gate, const Codec* codec, SenderOptions options)
    : conn_(conn), gate_(gate), codec_(codec), options_(options) {}

KvSender::~KvSender() {
  registration_.reset();  // deregister before the pool's memory can go
}

int KvSender::buffers_in_use() const { return pool_ ? pool_->in_use() : 0; }

absl::Status KvSender::EnsurePool(size_t buffer_bytes, int count) {
  if (pool_ && pool_->buffer_bytes() >= buffer_bytes && pool_->count() == count) {
    return absl::OkStatus();
  }
  registration_.reset();
  pool_.reset();
  KVS_ASSIGN_OR_RETURN(pool_, BufferPool::Create(buffer_bytes, count));
  KVS_ASSIGN_OR_RETURN(registration_, conn_->RegisterSendMemory(pool_->region()));
  return absl::OkStatus();
}

absl::StatusOr<TransferStats> KvSender::Send(const Session& session, const KvCacheView& kv,
                                             LayerProgress* progress) {
  KVS_RETURN_IF_ERROR(ValidateKv(kv));
  KVS_RETURN_IF_ERROR(CheckKvMatchesSession(kv.geom(), kv.k.dtype, session, *codec_));
  KVS_RETURN_IF_ERROR(conn_->status());
  const int n = static_cast<int>(session.chunks.size());
  const bool zero_copy = options_.zero_copy_identity && conn_->info().vectored_zero_copy &&
                         IdentityZeroCopyApplies(*codec_, session);
  const int buffers = options_.pipelined ? std::max(1, options_.encode_buffers) : n;
  if (!zero_copy) KVS_RETURN_IF_ERROR(EnsurePool(session.max_payload_bytes(), buffers));
  // Zero-copy identity: per chunk, the payload header; the K and V slabs are sent from `kv`.
  std::vector<PayloadHeader> zc_headers(zero_copy ? n : 0);
  std::vector<std::array<absl::Span<const uint8_t>, 3>> zc_parts(zero_copy ? n : 0);
  const size_t ws_bytes = codec_->WorkspaceBytes(session.geom.WithLayers(MaxChunkLayers(session)),
                                                 options_.codec_pool);
  if (workspace_.size() < ws_bytes) workspace_.resize(ws_bytes);

  gate_->Register(std::make_shared<Session>(session));
  struct Unregister {
    FrameGate* g;
    uint64_t id;
    ~Unregister() { g->Unregister(id); }
  } unregister{gate_, session.session_id};
  // The transfer starts here: pools are set-up, not transfer (a daemon keeps them warm).
  const int64_t start_ns = MonotonicNowNs();

  TransferStats stats;
  stats.transport = conn_->info().detail;
  stats.lane = conn_->info().lane;
  stats.codec = std::string(codec_->name());
  stats.pipelined = options_.pipelined;
  stats.chunk_timings.resize(n);

  SendState st;
  st.timings = &stats.chunk_timings;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    st.buffers.resize(n);
  }
  peak_in_use_ = 0;
  absl::Status local;       // our own failure (encode, producer, transport refusing a send)
  absl::Status peer_abort;  // the receiver's kAbort
  std::vector<FrameHeader> headers(n);
  int64_t last_ready_ns = start_ns;

  auto submit = [&](int i) -> absl::Status {
    absl::Span<const uint8_t> bytes;
    {
      std::lock_guard<std::mutex> lock(st.mu);
      bytes = st.buffers[i].span();
      ++st.submitted;
    }
    const absl::Span<const absl::Span<const uint8_t>> parts =
        zero_copy ? absl::MakeConstSpan(zc_parts[i]) : absl::MakeConstSpan(&bytes, 1);
    absl::Status s = conn_->SendV(headers[i], parts, [state = &st, i](const SendResult& r) {
      std::lock_guard<std::mutex> lock(state->mu);
      ChunkTiming& t = (*state->timings)[i];
      t.wire_begin_ns = r.wire_begin_ns;
      t.wire_end_ns = r.wire_end_ns;
      if (!r.status.ok() && state->first_error.ok()) state->first_error = r.status;
      state->buffers[i].Reset();
      ++state->completed;
      state->cv.notify_all();
    });
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(st.mu);
      st.buffers[i].Reset();
      ++st.completed;
    }
    return s;
  };
  // A kAbort from the receiver ends the transfer early; poll without blocking between chunks.
  auto poll_abort = [&]() {
    absl::StatusOr<ReceivedFrame> f = conn_->Receive(absl::ZeroDuration());
    if (f.ok() && f->header.kind == static_cast<uint8_t>(FrameKind::kAbort)) {
      peer_abort = DecodeAbortPayload(f->bytes());
    } else if (f.ok()) {
      peer_abort = absl::InternalError("receiver sent kDone before every chunk was sent");
    }
  };

  for (int i = 0; i < n && local.ok() && peer_abort.ok(); ++i) {
    const ChunkSpec& c = session.chunks[i];
    ChunkTiming& t = stats.chunk_timings[i];
    t.chunk = static_cast<uint32_t>(i);
    t.raw_bytes = c.raw_bytes;
    if (progress != nullptr) {
      local = progress->WaitFor(c.layer_end, options_.done_timeout);
      if (!local.ok()) break;
    }
    t.ready_ns = MonotonicNowNs();
    last_ready_ns = t.ready_ns;
    if (zero_copy) {
      {
        std::lock_guard<std::mutex> lock(st.mu);
        if (!st.first_error.ok()) {
          local = st.first_error;
          break;
        }
      }
      // "Encode" is the payload header and the CRC; the bytes leave from the KV itself.
      t.encode_begin_ns = MonotonicNowNs();
      const KvCacheView slab = kv.Layers(c.layer_begin, c.layer_end);
      const size_t half = c.raw_bytes / 2;
      zc_headers[i] = IdentityPayloadHeader(slab.geom(), kv.k.dtype);
      zc_parts[i] = {absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&zc_headers[i]), kPayloadHeaderBytes),
                     absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(slab.k.data), half),
                     absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(slab.v.data), half)};
      uint32_t crc = 0;
      for (const auto& p : zc_parts[i]) crc = Crc32cExtend(crc, p.data(), p.size());
      const uint64_t len = kPayloadHeaderBytes + c.raw_bytes;
      headers[i] = MakeChunkHeader(session, static_cast<uint32_t>(i), len, crc);
      t.wire_bytes = kFrameHeaderBytes + len;
      t.encode_end_ns = MonotonicNowNs();
      headers[i].sender_ts_ns = t.encode_end_ns;
      SealFrameHeader(&headers[i]);
      if (options_.pipelined) {
        local = submit(i);
        if (i + 1 < n) poll_abort();
      }
      continue;
    }
    absl::StatusOr<PooledBuffer> buf = pool_->Acquire(options_.done_timeout);
    if (!buf.ok()) {
      local = Annotate(buf.status(), "encode buffer");
      break;
    }
    {
      std::lock_guard<std::mutex> lock(st.mu);
      if (!st.first_error.ok()) {
        local = st.first_error;
        break;
      }
    }
    peak_in_use_ = std::max(peak_in_use_, pool_->in_use());
    t.encode_begin_ns = MonotonicNowNs();
    absl::StatusOr<size_t> len =
        codec_->Encode(kv.Layers(c.layer_begin, c.layer_end), buf->mutable_span(),
                       absl::MakeSpan(workspace_.data(), ws_bytes), options_.codec_pool);
    if (!len.ok()) {
      local = Annotate(len.status(), absl::StrCat("encode chunk ", i));
      break;
    }
    buf->set_size(*len);
    headers[i] = MakeChunkHeader(session, static_cast<uint32_t>(i), *len, Crc32c(buf->data(), *len));
    t.wire_bytes = kFrameHeaderBytes + *len;
    t.encode_end_ns = MonotonicNowNs();
    headers[i].sender_ts_ns = t.encode_end_ns;
    SealFrameHeader(&headers[i]);
    {
      std::lock_guard<std::mutex> lock(st.mu);
      st.buffers[i] = std::move(*buf);
    }
    if (options_.pipelined) {
      local = submit(i);
      // After the last chunk a kDone may legitimately be waiting: the final wait reads it.
      if (i + 1 < n) poll_abort();
    }
  }
  if (!options_.pipelined && local.ok() && peer_abort.ok()) {
    for (int i = 0; i < n && local.ok(); ++i) local = submit(i);
  }

  // Every submitted send must complete before the buffers may go.
  {
    std::unique_lock<std::mutex> lock(st.mu);
    if (!WaitWithTimeout(st.cv, lock, options_.done_timeout,
                         [&] { return st.completed == st.submitted; })) {
      lock.unlock();
      KVS_LOG_ERROR("session {}: sends did not complete in time; closing the connection",
                    session.session_id);
      conn_->Close();
      lock.lock();
      st.cv.wait(lock, [&] { return st.completed == st.submitted; });
      if (local.ok()) local = absl::DeadlineExceededError("sends did not complete in time");
    }
    if (local.ok() && !st.first_error.ok()) local = st.first_error;
    for (PooledBuffer& b : st.buffers) b.Reset();
  }

  // Wait for the receiver's verdict.
  int64_t end_ns = 0;
  if (local.ok() && peer_abort.ok()) {
    absl::StatusOr<ReceivedFrame> f = conn_->Receive(options_.done_timeout);
    end_ns = MonotonicNowNs();
    if (!f.ok()) {
      local = Annotate(f.status(), "waiting for the receiver's done");
    } else if (f->header.kind == static_cast<uint8_t>(FrameKind::kAbort)) {
      peer_abort = DecodeAbortPayload(f->bytes());
    } else if (f->header.kind != static_cast<uint8_t>(FrameKind::kDone)) {
      local = absl::InternalError("unexpected chunk frame from the receiver");
    } else {
      absl::Status crc = VerifyPayloadCrc(f->header, f->bytes());
      absl::StatusOr<std::vector<RxChunkTiming>> rx =
          crc.ok() ? DecodeDonePayload(f->bytes(), n) : absl::StatusOr<std::vector<RxChunkTiming>>(crc);
      if (!rx.ok()) {
        local = rx.status();
      } else if (!PlausiblePeerTimings(*rx)) {
        // Stats only: the KV itself arrived intact (every chunk CRC-checked, kDone sent).
        KVS_LOG_WARN("session {}: the receiver's stage timestamps are out of range; stats without them",
                     session.session_id);
      } else {
        for (const RxChunkTiming& r : *rx) {
          if (r.chunk >= static_cast<uint32_t>(n)) continue;
          ChunkTiming& t = stats.chunk_timings[r.chunk];
          t.recv_begin_ns = r.recv_begin_ns;
          t.recv_end_ns = r.recv_end_ns;
          t.decode_begin_ns = r.decode_begin_ns;
          t.decode_end_ns = r.decode_end_ns;
        }
        stats.has_peer_timings = true;
        // Move the receiver's stamps onto this clock (the two hosts' monotonic clocks differ).
        const int64_t offset = EstimatePeerClockOffsetNs(stats.chunk_timings,
                                                         f->recv_begin_ns != 0 ? f->recv_begin_ns : end_ns);
        stats.peer_clock_offset_ns = offset;
        if (offset != 0) {
          for (ChunkTiming& t : stats.chunk_timings) {
            for (int64_t* ts : {&t.recv_begin_ns, &t.recv_end_ns, &t.decode_begin_ns, &t.decode_end_ns}) {
              if (*ts != 0) *ts -= offset;
            }
          }
        }
      }
    }
  }
  if (!peer_abort.ok()) return peer_abort;
  if (!local.ok()) {
    if (conn_->status().ok()) {
      absl::Status s = SendControl(conn_, session, FrameKind::kAbort, EncodeAbortPayload(local),
                                   absl::Seconds(2));
      if (!s.ok()) KVS_LOG_WARN("session {}: could not send abort: {}", session.session_id, s.ToString());
    }
    return local;
  }
  // Handoff = prefill end (last layer ready) -> decode ready (kDone received).
  // With a producer, "prefill end" is when the last layer became ready.
  SummarizeTimings(progress != nullptr ? std::max(start_ns, last_ready_ns) : start_ns, end_ns, &stats);
  return stats;
}

// ---- KvReceiver ----------------------------------------------------------------------------------

KvReceiver::KvReceiver(Connection* conn, FrameGate* gate, const Codec* codec, ReceiverOptions options)
    : conn_(conn), gate_(gate), codec_(codec), options_(options) {}

absl::StatusOr<TransferStats> KvReceiver::Receive(const Session& session,
                                                  const MutableKvCacheView& dest,
                                                  std::vector<uint8_t>* keep_mask) {
  KVS_RETURN_IF_ERROR(ValidateKv(dest));
  KVS_RETURN_IF_ERROR(CheckKvMatchesSession(dest.geom(), dest.k.dtype, session, *codec_));
  gate_->Register(std::make_shared<Session>(session));
  struct Unregister {
    FrameGate* g;
    uint64_t id;
    ~Unregister() { g->Unregister(id); }
  } unregister{gate_, session.session_id};

  const int n = static_cast<int>(session.chunks.size());
  const size_t ws_bytes = codec_->WorkspaceBytes(session.geom.WithLayers(MaxChunkLayers(session)),
                                                 options_.codec_pool);
  if (workspace_.size() < ws_bytes) workspace_.resize(ws_bytes);

  // Zero-copy identity: the transport puts each chunk's K and V straight into `dest` (when the
  // connection asks the gate); the 32-byte payload headers land in `scratch`.
  const bool zero_copy = options_.zero_copy_identity && IdentityZeroCopyApplies(*codec_, session);
  auto scratch = std::make_shared<std::vector<PayloadHeader>>(zero_copy ? n : 0);
  if (zero_copy) {
    auto plan = std::make_shared<Session>(session);
    gate_->SetPlacer(session.session_id, [scratch, plan, dest](const FrameHeader& h, PayloadPlacement* out) {
      if (h.kind != static_cast<uint8_t>(FrameKind::kChunk) || h.chunk_index >= plan->chunks.size()) return false;
      const ChunkSpec& c = plan->chunks[h.chunk_index];
      const size_t half = c.raw_bytes / 2;
      out->parts[0] = absl::MakeSpan(reinterpret_cast<uint8_t*>(&(*scratch)[h.chunk_index]), kPayloadHeaderBytes);
      out->parts[1] = absl::MakeSpan(reinterpret_cast<uint8_t*>(dest.k.layer(c.layer_begin)), half);
      out->parts[2] = absl::MakeSpan(reinterpret_cast<uint8_t*>(dest.v.layer(c.layer_begin)), half);
      out->count = 3;
      return true;
    });
  }

  TransferStats stats;
  stats.transport = conn_->info().detail;
  stats.lane = conn_->info().lane;
  stats.codec = std::string(codec_->name());
  stats.pipelined = options_.pipelined;
  stats.chunk_timings.resize(n);
  std::vector<bool> seen(n, false);
  // The keep mask: every position kept until a pruning codec's payload says otherwise.
  const int64_t S = session.geom.tokens;
  const bool want_mask = keep_mask != nullptr && codec_->info().prunes;
  std::vector<uint8_t> chunk_mask(want_mask ? static_cast<size_t>(S) : 0);
  if (keep_mask != nullptr) keep_mask->assign(static_cast<size_t>(session.geom.layers * S), 1);
  std::vector<ReceivedFrame> held;  // sequential mode only
  if (!options_.pipelined) held.reserve(n);
  int64_t first_ns = 0;

  auto decode = [&](ReceivedFrame& f) -> absl::Status {
    const FrameHeader& h = f.header;
    ChunkTiming& t = stats.chunk_timings[h.chunk_index];
    t.decode_begin_ns = MonotonicNowNs();
    if (f.is_placed()) {
      // Already in place: check the CRC over what landed and the payload header it carried.
      absl::Span<const uint8_t> parts[kMaxPayloadParts];
      for (int k = 0; k < f.placed.count; ++k) parts[k] = f.placed.parts[k];
      KVS_RETURN_IF_ERROR(VerifyPayloadCrc(h, absl::MakeConstSpan(parts, f.placed.count)));
      const ChunkSpec& c = session.chunks[h.chunk_index];
      const PayloadHeader want = IdentityPayloadHeader(
          session.geom.WithLayers(c.layer_end - c.layer_begin), session.dtype);
      if (f.placed.parts[0].size() != sizeof want ||
          std::memcmp(f.placed.parts[0].data(), &want, sizeof want) != 0) {
        return absl::DataLossError(absl::StrCat("chunk ", h.chunk_index, ": identity payload header differs"));
      }
      t.decode_end_ns = MonotonicNowNs();
      return absl::OkStatus();
    }
    KVS_RETURN_IF_ERROR(VerifyPayloadCrc(h, f.bytes()));
    KVS_RETURN_IF_ERROR(Annotate(
        codec_->Decode(f.bytes(), dest.Layers(h.layer_begin, h.layer_end),
                       absl::MakeSpan(workspace_.data(), ws_bytes), options_.codec_pool,
                       absl::MakeSpan(chunk_mask)),
        absl::StrCat("decode chunk ", h.chunk_index)));
    if (want_mask) {
      if (std::find(chunk_mask.begin(), chunk_mask.end(), uint8_t{1}) == chunk_mask.end()) {
        return absl::DataLossError(
            absl::StrCat("chunk ", h.chunk_index, ": the payload's keep mask evicts every position"));
      }
      for (uint32_t l = h.layer_begin; l < h.layer_end; ++l) {
        std::copy(chunk_mask.begin(), chunk_mask.end(), keep_mask->begin() + static_cast<int64_t>(l) * S);
      }
    }
    t.decode_end_ns = MonotonicNowNs();
    f.payload.Reset();
    return absl::OkStatus();
  };

  absl::Status result;
  int received = 0;
  while (received < n) {
    absl::StatusOr<ReceivedFrame> f = conn_->Receive(options_.frame_timeout);
    if (!f.ok()) {
      result = f.status();
      break;
    }
    const FrameHeader& h = f->header;
    if (h.kind == static_cast<uint8_t>(FrameKind::kAbort)) {
      absl::Status peer = DecodeAbortPayload(f->bytes());
      return peer;  // the sender gave up; nothing to tell it
    }
    if (h.kind != static_cast<uint8_t>(FrameKind::kChunk) || h.session_id != session.session_id) {
      result = absl::InvalidArgumentError("unexpected frame from the sender");
      break;
    }
    if (seen[h.chunk_index]) {
      result = absl::InvalidArgumentError(absl::StrCat("chunk ", h.chunk_index, " arrived twice"));
      break;
    }
    seen[h.chunk_index] = true;
    ++received;
    ChunkTiming& t = stats.chunk_timings[h.chunk_index];
    t.chunk = h.chunk_index;
    t.raw_bytes = h.raw_bytes;
    t.wire_bytes = kFrameHeaderBytes + h.payload_bytes;
    t.recv_begin_ns = f->recv_begin_ns;
    t.recv_end_ns = f->recv_end_ns;
    if (first_ns == 0) first_ns = f->recv_begin_ns;
    if (options_.pipelined) {
      result = decode(*f);
      if (!result.ok()) break;
    } else {
      held.push_back(std::move(*f));
    }
  }
  if (result.ok() && !options_.pipelined) {
    for (ReceivedFrame& f : held) {
      result = decode(f);
      if (!result.ok()) break;
    }
  }
  held.clear();  // every buffer back to the pool

  if (!result.ok()) {
    KVS_LOG_ERROR("session {}: receive failed: {}", session.session_id, result.ToString());
    if (conn_->status().ok()) {
      absl::Status s = SendControl(conn_, session, FrameKind::kAbort, EncodeAbortPayload(result),
                                   options_.abort_drain);
      if (s.ok()) {
        // Keep reading (and dropping) until the sender hangs up, so the abort is not lost to a
        // reset of a connection with unread data.
        const absl::Time deadline = absl::Now() + options_.abort_drain;
        while (absl::Now() < deadline) {
          if (!conn_->Receive(deadline - absl::Now()).ok()) break;
        }
      }
    }
    return result;
  }

  if (options_.on_received) options_.on_received();
  std::vector<RxChunkTiming> rx(n);
  for (int i = 0; i < n; ++i) {
    const ChunkTiming& t = stats.chunk_timings[i];
    rx[i] = {static_cast<uint32_t>(i), 0, t.recv_begin_ns, t.recv_end_ns, t.decode_begin_ns,
             t.decode_end_ns};
  }
  KVS_RETURN_IF_ERROR(Annotate(SendControl(conn_, session, FrameKind::kDone, EncodeDonePayload(rx),
                                           options_.frame_timeout),
                               "sending done"));
  int64_t last_ns = 0;
  for (const ChunkTiming& t : stats.chunk_timings) last_ns = std::max(last_ns, t.decode_end_ns);
  SummarizeTimings(first_ns, last_ns, &stats);
  return stats;
}

}  // namespace kvs::transfer
