// services/transfer/transport.h — the data-plane transport interface (ARCHITECTURE.md §5).
//
// A Transport makes Connections: Listen() + Accept() on the receiving side, Connect(endpoint) on
// the sending side. A Connection moves frames (a FrameHeader and a payload) both ways:
//   - Send() is asynchronous: the payload must stay valid until `done` runs; at most
//     ConnectionOptions::max_inflight_sends frames are queued, after which Send() blocks
//     (back-pressure: sender memory is bounded by configuration, not by KV size).
//   - Every incoming header is checked (CheckFrameHeader, then the caller's validator, then the
//     receive-buffer size) BEFORE its payload is read; a rejected frame fails the connection with
//     the validator's status and its payload is never read.
//   - Payloads land in buffers from a bounded pool owned by the connection; a ReceivedFrame
//     lends one and returns it when destroyed. When every buffer is lent, the transport stops
//     reading (TCP flow control / UCX rendezvous not fetched), which throttles the sender.
//   - Peer loss (EOF/RST, UCX error callback, keepalive) fails the connection with UNAVAILABLE;
//     queued sends complete with it and Receive() returns it once queued frames are drained.
//
//   std::unique_ptr<Transport> t = CreateTcpTransport({});
//   KVS_ASSIGN_OR_RETURN(auto listener, t->Listen());
//   ... peer: KVS_ASSIGN_OR_RETURN(auto conn, t->Connect(listener->endpoint(), opts));
//   KVS_ASSIGN_OR_RETURN(auto conn, listener->Accept(opts, absl::Seconds(5)));
//   KVS_ASSIGN_OR_RETURN(ReceivedFrame f, conn->Receive(absl::Seconds(5)));
//
// Implementations: tcp/tcp_transport.h (always built) and ucx/ucx_transport.h (KVS_WITH_UCX).
// Thread-safety: Transport, Listener and Connection are thread-safe; `done` callbacks run on a
// transport thread and must not block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "services/transfer/buffer_pool.h"
#include "services/transfer/frame.h"

namespace kvs::transfer {

// CLOCK_MONOTONIC in ns: the clock of every stage timestamp (shared by processes on one host).
int64_t MonotonicNowNs();

// Checks a header before its payload is read; a non-OK status fails the connection.
using HeaderValidator = std::function<absl::Status(const FrameHeader&)>;

// The outcome of one Send: status, and when the transport started and finished putting it on
// the wire (CLOCK_MONOTONIC ns; finish = handed to the kernel / UCX send completion).
struct SendResult {
  absl::Status status;
  int64_t wire_begin_ns = 0;
  int64_t wire_end_ns = 0;
};
// Runs exactly once per Send that returned OK, on a transport thread. Captures of up to 16 bytes
// keep std::function from allocating.
using SendCallback = std::function<void(const SendResult&)>;

struct ReceivedFrame {
  FrameHeader header;
  PooledBuffer payload;       // payload.size() == header.payload_bytes (unless placed)
  PayloadPlacement placed;    // placed.count > 0: the payload went where the placer said instead
  int64_t recv_begin_ns = 0;  // header arrived
  int64_t recv_end_ns = 0;    // payload complete
  bool is_placed() const { return placed.count > 0; }
  absl::Span<const uint8_t> bytes() const { return payload.span(); }
};

struct ConnectionOptions {
  // Required: checks each incoming header (typically FrameGate::Check of the caller's gate).
  HeaderValidator validator;
  // Optional: asked for each accepted header whether its payload goes straight to a destination
  // (typically FrameGate::Place); otherwise it lands in a receive buffer.
  PayloadPlacer placer;
  // Size of each receive buffer: the largest payload this connection accepts (larger frames are
  // rejected with OUT_OF_RANGE before reading). Typically Session::max_payload_bytes().
  size_t recv_buffer_bytes = 1 << 20;
  // Receive buffers in the pool: bounds receiver memory to recv_buffers * recv_buffer_bytes.
  int recv_buffers = 4;
  // Frames queued for sending before Send() blocks.
  int max_inflight_sends = 4;
};

// Counters for tests and metrics (a snapshot).
struct ConnectionCounters {
  uint64_t frames_sent = 0;
  uint64_t frames_received = 0;
  uint64_t frames_rejected = 0;       // headers the checks refused (payload unread)
  uint64_t payload_bytes_read = 0;    // payload bytes taken off the wire into buffers
  int recv_buffers_in_use = 0;        // lent to ReceivedFrames or being filled
};

// What actually carries the bytes.
struct TransportInfo {
  std::string kind;    // "tcp" or "ucx"
  std::string detail;  // e.g. "tcp 4 streams 127.0.0.1:40123", "ucx tcp/lo", "ucx posix/memory"
  // The UCX transport names the endpoint's active-message lane uses (e.g. "tcp", "posix",
  // "sysv", "cma", "self"), "tcp" for the TCP transport.
  std::string lane;
  // Scattered payloads (SendV with several parts) and placed receives cost no extra copy here;
  // the pipeline sends identity chunks straight from the KV only when this is true.
  bool vectored_zero_copy = false;
};

class Connection {
 public:
  virtual ~Connection() = default;

  // Queues header + payload, the payload being the concatenation of `parts` (at most
  // kMaxPayloadParts, copied; the bytes they point to must stay valid until `done` runs, so a
  // sender can send straight from the KV). Blocks while max_inflight_sends frames are queued.
  // Returns the connection's failure status if it has failed (then `done` never runs).
  virtual absl::Status SendV(const FrameHeader& header,
                             absl::Span<const absl::Span<const uint8_t>> parts, SendCallback done) = 0;
  // SendV with one part.
  absl::Status Send(const FrameHeader& header, absl::Span<const uint8_t> payload, SendCallback done) {
    const absl::Span<const uint8_t> one[1] = {payload};
    return SendV(header, absl::MakeConstSpan(one, payload.empty() ? 0 : 1), std::move(done));
  }

  // The next received frame; DEADLINE_EXCEEDED after `timeout`; the failure status once the
  // connection has failed and every frame received before the failure has been returned.
  virtual absl::StatusOr<ReceivedFrame> Receive(absl::Duration timeout) = 0;

  // OK while healthy, else the first failure (peer loss => UNAVAILABLE).
  virtual absl::Status status() const = 0;

  virtual const TransportInfo& info() const = 0;
  virtual ConnectionCounters counters() const = 0;

  // Registers memory the caller will send from (UCX: ucp_mem_map once, so sends from it need no
  // per-send registration; TCP: nothing). The region must outlive the registration.
  class MemoryRegistration {
   public:
    virtual ~MemoryRegistration() = default;
  };
  virtual absl::StatusOr<std::unique_ptr<MemoryRegistration>> RegisterSendMemory(
      absl::Span<uint8_t> region) = 0;

  // Fails queued sends with CANCELLED, wakes Receive(), releases the peer. Idempotent; the
  // destructor calls it.
  virtual void Close() = 0;
};

class Listener {
 public:
  virtual ~Listener() = default;
  // What a peer passes to Transport::Connect: "host:port" (TCP) or the hex UCX worker address.
  virtual std::string endpoint() const = 0;
  // The next peer's connection; DEADLINE_EXCEEDED after `timeout`.
  virtual absl::StatusOr<std::unique_ptr<Connection>> Accept(const ConnectionOptions& options,
                                                             absl::Duration timeout) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual absl::string_view name() const = 0;  // "tcp" / "ucx"
  virtual absl::StatusOr<std::unique_ptr<Listener>> Listen() = 0;
  virtual absl::StatusOr<std::unique_ptr<Connection>> Connect(absl::string_view endpoint,
                                                              const ConnectionOptions& options,
                                                              absl::Duration timeout) = 0;
};

}  // namespace kvs::transfer
