// services/transfer/pipeline.h — the chunk pipeline: encode ‖ send ‖ receive ‖ decode, with every
// stage boundary timestamped on both sides (ARCHITECTURE.md §5).
//
// Sender: the caller's thread encodes chunk i+1 (a slab of layers, kv.Layers(l0, l1), each its own
// codec payload) into a buffer from a bounded pool while the transport puts chunk i on the wire.
// Receiver: the transport fills receive buffers while the caller's thread checks each payload's
// CRC and decodes chunk i-1 in place into the destination KV (dest.Layers(l0, l1); no second
// copy). Memory is bounded on both sides by configuration (encode_buffers, the connection's
// receive pool, max_inflight_sends), never by the KV size. When every chunk is decoded the
// receiver sends kDone with its timestamps; the sender returns stats covering both sides.
//
//   // decode side (after OpenSession registered `session` in `gate`):
//   KvReceiver rx(conn.get(), codec.get(), {});
//   KVS_ASSIGN_OR_RETURN(TransferStats rs, rx.Receive(session, dest_kv));
//   // pruning codecs: rx.Receive(session, dest_kv, &keep) also yields the evicted positions
//   // prefill side:
//   KvSender tx(conn.get(), codec.get(), {});
//   KVS_ASSIGN_OR_RETURN(TransferStats ts, tx.Send(session, kv));        // all layers ready
//   // or overlap with prefill: chunk i leaves once its layers are marked ready
//   LayerProgress progress;  tx.Send(session, kv, &progress);  // elsewhere: progress.MarkReady(l)
//
// Sequential mode (pipelined = false) is the comparison baseline: encode every chunk, then send
// them all, then (receiver) decode them all; it needs chunk_count buffers on each side.
//
// Thread-safety: a KvSender / KvReceiver runs one transfer at a time (not thread-safe);
// LayerProgress is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tensor/kv.h"
#include "common/thread_pool/thread_pool.h"
#include "kernels/codec.h"
#include "services/transfer/buffer_pool.h"
#include "services/transfer/frame.h"
#include "services/transfer/transport.h"

namespace kvs::transfer {

// Stage boundaries of one chunk, CLOCK_MONOTONIC ns (0 = not recorded).
struct ChunkTiming {
  uint32_t chunk = 0;
  uint64_t raw_bytes = 0;
  uint64_t wire_bytes = 0;      // frame header + payload
  int64_t ready_ns = 0;         // sender: the chunk's layers were available
  int64_t encode_begin_ns = 0;  // sender: encode started (an encode buffer was free)
  int64_t encode_end_ns = 0;    // sender: payload + CRC done, frame handed to the transport
  int64_t wire_begin_ns = 0;    // sender transport: started writing
  int64_t wire_end_ns = 0;      // sender transport: last byte handed over
  int64_t recv_begin_ns = 0;    // receiver transport: header arrived
  int64_t recv_end_ns = 0;      // receiver transport: payload in a receive buffer
  int64_t decode_begin_ns = 0;  // receiver: CRC check + decode started
  int64_t decode_end_ns = 0;    // receiver: decoded in place
};

// The analytic model of CODECS.md §5 for the measured per-chunk stage times at link rate B:
// x_i = 8·wire_i / (B·10^6) ms, c_i = encode_i, d_i = decode_i;
// sequential T = Σc + Σx + Σd;  pipelined T = (c0 + x0 + d0) + (n−1)·max(mean c, mean x, mean d).
struct AnalyticPrediction {
  double link_gbps = 0;      // B, decimal Gbit/s (the baseline measured in the same run)
  double transfer_ms = 0;    // Σx: wire bytes at B
  double raw_ms = 0;         // raw K+V bytes at B (no codec)
  double sequential_ms = 0;
  double pipelined_ms = 0;
};

// Per transfer. Times in ms. Stage "busy" times are sums over chunks; wire_ms is the union of the
// chunks' [wire_begin, recv_end] intervals (the time the link carried this transfer's frames).
struct TransferStats {
  std::string transport;  // TransportInfo::detail
  std::string lane;       // TransportInfo::lane
  std::string codec;
  bool pipelined = true;
  int chunks = 0;
  uint64_t bytes_raw = 0;   // K+V at 16 bits per element
  uint64_t bytes_wire = 0;  // every chunk frame's header + payload
  double ratio = 0;         // bytes_raw / bytes_wire
  double encode_ms = 0;     // Σ encode (sender)
  double queue_ms = 0;      // Σ (wire_begin − encode_end) + Σ (decode_begin − recv_end)
  double wire_ms = 0;       // union of [wire_begin, recv_end] (receiver stamps on the sender's clock)
  double decode_ms = 0;     // Σ CRC check + decode (receiver)
  double handoff_ms = 0;    // sender start -> every chunk decoded (kDone received / last decode)
  double goodput_gbps = 0;  // bytes_raw over handoff (KV delivered per second)
  double wire_gbps = 0;     // bytes_wire over wire_ms
  bool has_peer_timings = false;  // the receiver's timestamps are merged in
  // Receiver clock − sender clock, estimated by EstimatePeerClockOffsetNs and already removed
  // from the merged receiver timestamps (0 on one host).
  int64_t peer_clock_offset_ns = 0;
  std::vector<ChunkTiming> chunk_timings;
  AnalyticPrediction analytic;  // filled by PredictHandoff() (link_gbps = 0: not computed)
};

// The receiver's CLOCK_MONOTONIC minus the sender's, from one transfer's own frames (two hosts'
// monotonic clocks are unrelated). Causality bounds it: a chunk's header arrives after its send
// began (offset <= recv_begin - wire_begin, tightest for a chunk with nothing queued ahead of
// it), and kDone, sent after the last decode, arrives at `done_arrival_ns` after it (offset >=
// decode_end - done_arrival). Returns 0 when 0 lies within the bounds (one host: exact), else
// their midpoint (error <= half the interval: about the one-way latency plus scheduling delay).
// `t` holds sender stamps (wire_begin) and receiver stamps (recv_begin, decode_end) as received.
int64_t EstimatePeerClockOffsetNs(absl::Span<const ChunkTiming> t, int64_t done_arrival_ns);

// Fills stats->analytic for link rate `link_gbps` from the measured chunk timings.
void PredictHandoff(double link_gbps, TransferStats* stats);
// Recomputes the aggregate fields from chunk_timings (start_ns = the sender's start).
void SummarizeTimings(int64_t start_ns, int64_t end_ns, TransferStats* stats);

// Layers become ready as the model computes them (prefill layer by layer). Thread-safe.
class LayerProgress {
 public:
  // Layers [0, n) are computed. Monotonic; smaller values are ignored.
  void MarkReady(int64_t n);
  // The producer failed: waiting senders return `s`.
  void Fail(absl::Status s);
  // Blocks until layers [0, n) are ready (or the producer failed / timeout).
  absl::Status WaitFor(int64_t n, absl::Duration timeout);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t ready_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
};

struct SenderOptions {
  // Encode buffers (each Session::max_payload_bytes): bounds sender memory in pipelined mode.
  int encode_buffers = 3;
  bool pipelined = true;
  // identity only: send each chunk straight from the KV (payload header + K slab + V slab as a
  // vectored send; "encode" is the CRC) instead of copying it into an encode buffer. The bytes
  // on the wire are the same.
  bool zero_copy_identity = true;
  ThreadPool* codec_pool = nullptr;  // threads for Codec::Encode (null: the calling thread)
  // How long to wait for the receiver's kDone after the last send, and for a layer to be ready.
  absl::Duration done_timeout = absl::Seconds(60);
};

class KvSender {
 public:
  // `conn` and `codec` must outlive the sender; `gate` is the FrameGate the connection's
  // validator checks (the sender registers its session there for the receiver's control frames).
  KvSender(Connection* conn, FrameGate* gate, const Codec* codec, SenderOptions options = {});
  ~KvSender();

  // Sends kv (geometry = session.geom) and waits for the receiver's kDone. `progress`, when not
  // null, gates each chunk on its layers being ready. On failure an kAbort is sent when the
  // connection still works; every buffer is returned before this returns.
  absl::StatusOr<TransferStats> Send(const Session& session, const KvCacheView& kv,
                                     LayerProgress* progress = nullptr);

  // Peak encode buffers lent at once during the last Send (<= encode_buffers when pipelined).
  int peak_buffers_in_use() const { return peak_in_use_; }
  // Encode buffers currently lent (0 once Send has returned).
  int buffers_in_use() const;

 private:
  absl::Status EnsurePool(size_t buffer_bytes, int count);

  Connection* conn_;
  FrameGate* gate_;
  const Codec* codec_;
  SenderOptions options_;
  std::shared_ptr<BufferPool> pool_;
  std::unique_ptr<Connection::MemoryRegistration> registration_;
  std::vector<uint8_t> workspace_;
  int peak_in_use_ = 0;
};

struct ReceiverOptions {
  bool pipelined = true;  // false: hold every frame, then decode them all (needs chunk_count recv buffers)
  // identity only: the transport reads each chunk's K and V bytes straight into the destination
  // (when the connection was given the gate's placer); "decode" is the CRC and header check.
  // On failure, close the connection before reusing `dest`: a transport may still be writing.
  bool zero_copy_identity = true;
  ThreadPool* codec_pool = nullptr;
  // Longest wait for the next frame (peer loss is reported by the transport well before this).
  absl::Duration frame_timeout = absl::Seconds(60);
  // After a failure the receiver sends kAbort and drains the connection this long so the abort
  // reaches the sender before the connection closes.
  absl::Duration abort_drain = absl::Seconds(2);
  // Called once every chunk is decoded, before kDone goes back: whatever it records happens
  // before the sender's Send returns.
  std::function<void()> on_received;
};

class KvReceiver {
 public:
  KvReceiver(Connection* conn, FrameGate* gate, const Codec* codec, ReceiverOptions options = {});

  // Receives session's chunks and decodes each in place into `dest` (geometry = session.geom),
  // then sends kDone. The session must be registered in the gate before the sender starts (as
  // OpenSession does); Receive registers it too. On any failure (peer loss, CRC mismatch, bad
  // frame) `dest` is unspecified, kAbort is sent when possible and the error returned.
  // `keep_mask`, when not null, receives the decoded keep mask: L x S entries (session.geom),
  // layer-major; entry (l, s) is 0 when the payload of the chunk holding layer l evicted token
  // position s (pruning codecs in PruneFill::kMask, CODECS.md §0), else 1. A chunk whose mask
  // keeps no position fails the transfer (DataLoss).
  absl::StatusOr<TransferStats> Receive(const Session& session, const MutableKvCacheView& dest,
                                        std::vector<uint8_t>* keep_mask = nullptr);

 private:
  Connection* conn_;
  FrameGate* gate_;
  const Codec* codec_;
  ReceiverOptions options_;
  std::vector<uint8_t> workspace_;
};

}  // namespace kvs::transfer
