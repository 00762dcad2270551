#include "services/transfer/tcp/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "services/transfer/internal/rx_queue.h"

namespace kvs::transfer {
namespace {

constexpr uint32_t kHelloMagic = 0x4853564Bu;  // "KVSH"
constexpr uint16_t kHelloVersion = 1;
constexpr int kMaxStreams = 64;

// First bytes on every stream: which connection and which stream of it this socket is.
struct TcpHello {
  uint32_t magic;
  uint16_t version;
  uint16_t stream_index;
  uint16_t stream_count;
  uint16_t reserved0;
  uint32_t reserved1;
  uint64_t connection_nonce;
  uint64_t reserved2;
};
static_assert(sizeof(TcpHello) == 32);

std::string Errno(absl::string_view what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

// Owns a file descriptor.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(o.release()) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept {
    reset(o.release());
    return *this;
  }
  ~ScopedFd() { reset(); }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int f = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = f;
  }

 private:
  int fd_ = -1;
};

absl::Status SplitHostPort(absl::string_view endpoint, std::string* host, std::string* port) {
  const size_t colon = endpoint.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 || colon + 1 == endpoint.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tcp endpoint '", endpoint, "' is not host:port"));
  }
  absl::string_view h = endpoint.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  *host = std::string(h);
  *port = std::string(endpoint.substr(colon + 1));
  uint32_t p;
  if (!absl::SimpleAtoi(*port, &p) || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("tcp endpoint '", endpoint, "': bad port"));
  }
  return absl::OkStatus();
}

void SetSocketOptions(int fd, const TcpTransportOptions& o) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  if (o.socket_buffer_bytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o.socket_buffer_bytes, sizeof o.socket_buffer_bytes);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o.socket_buffer_bytes, sizeof o.socket_buffer_bytes);
  }
  if (o.user_timeout_ms > 0) {
    unsigned t = static_cast<unsigned>(o.user_timeout_ms);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &t, sizeof t);
    int idle = std::max(1, o.user_timeout_ms / 1000 / 2), intvl = 1, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
}

// Waits until fd is readable/writable; DEADLINE_EXCEEDED at `deadline`.
absl::Status PollUntil(int fd, short events, absl::Time deadline) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    int ms = deadline == absl::InfiniteFuture()
                 ? -1
                 : static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(left)));
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, ms);
    if (r > 0) return absl::OkStatus();
    if (r == 0) return absl::DeadlineExceededError("tcp: timed out");
    if (errno != EINTR) return absl::UnavailableError(Errno("tcp: poll"));
  }
}

// Reads exactly n bytes. EOF before the first byte => UNAVAILABLE "peer closed"; mid-way => also
// UNAVAILABLE (truncated).
absl::Status ReadExact(int fd, void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, p + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r == 0) {
      return absl::UnavailableError(got == 0 ? "tcp: peer closed the connection"
                                             : "tcp: peer closed the connection mid-frame");
    } else if (errno != EINTR) {
      return absl::UnavailableError(Errno("tcp: recv"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadExactUntil(int fd, void* buf, size_t n, absl::Time deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    KVS_RETURN_IF_ERROR(PollUntil(fd, POLLIN, deadline));
    ssize_t r = ::recv(fd, p + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r == 0) {
      return absl::UnavailableError("tcp: peer closed the connection");
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      return absl::UnavailableError(Errno("tcp: recv"));
    }
  }
  return absl::OkStatus();
}

// Reads exactly the placement's bytes, scattered over its parts.
absl::Status ReadvExact(int fd, const PayloadPlacement& pl) {
  iovec iov[kMaxPayloadParts];
  int cnt = 0;
  for (int i = 0; i < pl.count; ++i) {
    if (!pl.parts[i].empty()) iov[cnt++] = {pl.parts[i].data(), pl.parts[i].size()};
  }
  iovec* v = iov;
  while (cnt > 0) {
    ssize_t r = ::readv(fd, v, cnt);
    if (r == 0) return absl::UnavailableError("tcp: peer closed the connection mid-frame");
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(Errno("tcp: recv"));
    }
    size_t left = static_cast<size_t>(r);
    while (cnt > 0 && left >= v->iov_len) {
      left -= v->iov_len;
      ++v;
      --cnt;
    }
    if (cnt > 0) {
      v->iov_base = static_cast<uint8_t*>(v->iov_base) + left;
      v->iov_len -= left;
    }
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, iovec* iov, int iovcnt) {
  while (iovcnt > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(iovcnt);
    ssize_t w = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(Errno("tcp: send"));
    }
    size_t left = static_cast<size_t>(w);
    while (iovcnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --iovcnt;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<uint8_t*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return absl::OkStatus();
}

// ---- TcpConnection -------------------------------------------------------------------------------

class TcpConnection final : public Connection {
 public:
  TcpConnection(std::vector<ScopedFd> fds, std::shared_ptr<BufferPool> pool,
                const ConnectionOptions& options, std::string detail)
      : fds_(std::move(fds)),
        pool_(std::move(pool)),
        validator_(options.validator),
        placer_(options.placer),
        send_ring_(std::max(1, options.max_inflight_sends)),
        rx_(pool_->count()) {
    info_.kind = "tcp";
    info_.lane = "tcp";
    info_.vectored_zero_copy = true;  // sendmsg/readv with an iovec
    info_.detail = std::move(detail);
    for (size_t i = 0; i < fds_.size(); ++i) {
      readers_.emplace_back([this, i] { ReaderLoop(fds_[i].get()); });
      writers_.emplace_back([this, i] { WriterLoop(fds_[i].get()); });
    }
  }

  ~TcpConnection() override { Close(); }

  absl::Status SendV(const FrameHeader& header, absl::Span<const absl::Span<const uint8_t>> parts,
                     SendCallback done) override {
    if (parts.size() > static_cast<size_t>(kMaxPayloadParts)) {
      return absl::InvalidArgumentError("tcp: too many payload parts");
    }
    std::unique_lock<std::mutex> lock(send_mu_);
    space_cv_.wait(lock, [&] { return closed_ || !failure_.ok() || inflight_ < send_ring_.size(); });
    if (closed_) return absl::CancelledError("tcp: connection closed");
    if (!failure_.ok()) return failure_;
    SendSlot& s = send_ring_[(send_head_ + queued_) % send_ring_.size()];
    s.header = header;
    s.count = static_cast<int>(parts.size());
    for (size_t i = 0; i < parts.size(); ++i) s.parts[i] = parts[i];
    s.done = std::move(done);
    ++queued_;
    ++inflight_;
    work_cv_.notify_one();
    return absl::OkStatus();
  }

  absl::StatusOr<ReceivedFrame> Receive(absl::Duration timeout) override { return rx_.Pop(timeout); }

  absl::Status status() const override {
    std::lock_guard<std::mutex> lock(send_mu_);
    return failure_;
  }

  const TransportInfo& info() const override { return info_; }

  ConnectionCounters counters() const override {
    ConnectionCounters c;
    c.frames_sent = frames_sent_.load();
    c.frames_received = frames_received_.load();
    c.frames_rejected = frames_rejected_.load();
    c.payload_bytes_read = payload_bytes_read_.load();
    c.recv_buffers_in_use = pool_->in_use();
    return c;
  }

  absl::StatusOr<std::unique_ptr<MemoryRegistration>> RegisterSendMemory(absl::Span<uint8_t>) override {
    return std::unique_ptr<MemoryRegistration>(new MemoryRegistration());
  }

  void Close() override {
    {
      std::lock_guard<std::mutex> lock(send_mu_);
      if (closed_) return;
      closed_ = true;
      work_cv_.notify_all();
      space_cv_.notify_all();
    }
    Fail(absl::CancelledError("tcp: connection closed"));
    pool_->Close();
    for (auto& t : writers_) t.join();
    for (auto& t : readers_) t.join();
    rx_.Clear();
    for (auto& fd : fds_) fd.reset();
  }

 private:
  struct SendSlot {
    FrameHeader header;
    std::array<absl::Span<const uint8_t>, kMaxPayloadParts> parts;
    int count = 0;
    SendCallback done;
  };

  // First failure wins; wakes every thread (shutdown() unblocks recv/send in other threads).
  void Fail(const absl::Status& s) {
    {
      std::lock_guard<std::mutex> lock(send_mu_);
      if (failure_.ok()) failure_ = s;
      work_cv_.notify_all();
      space_cv_.notify_all();
    }
    if (rx_.Fail(s) && !absl::IsCancelled(s)) {
      KVS_LOG_DEBUG("tcp connection {} failed: {}", info_.detail, s.ToString());
    }
    for (auto& fd : fds_) ::shutdown(fd.get(), SHUT_RDWR);
  }

  void WriterLoop(int fd) {
    while (true) {
      SendSlot slot;
      absl::Status failed;
      {
        std::unique_lock<std::mutex> lock(send_mu_);
        work_cv_.wait(lock, [&] { return queued_ > 0 || closed_ || !failure_.ok(); });
        if (queued_ == 0) return;  // closed or failed, nothing left to complete
        SendSlot& s = send_ring_[send_head_];
        slot.header = s.header;
        slot.parts = s.parts;
        slot.count = s.count;
        slot.done = std::move(s.done);
        send_head_ = (send_head_ + 1) % send_ring_.size();
        --queued_;
        failed = failure_;
      }
      SendResult r;
      if (failed.ok()) {
        iovec iov[1 + kMaxPayloadParts];
        int cnt = 0;
        iov[cnt++] = {&slot.header, sizeof(FrameHeader)};
        for (int i = 0; i < slot.count; ++i) {
          if (!slot.parts[i].empty()) {
            iov[cnt++] = {const_cast<uint8_t*>(slot.parts[i].data()), slot.parts[i].size()};
          }
        }
        r.wire_begin_ns = MonotonicNowNs();
        r.status = WriteAll(fd, iov, cnt);
        r.wire_end_ns = MonotonicNowNs();
        if (!r.status.ok()) {
          Fail(r.status);
        } else {
          frames_sent_.fetch_add(1);
        }
      } else {
        r.status = failed;
      }
      if (slot.done) slot.done(r);
      std::lock_guard<std::mutex> lock(send_mu_);
      --inflight_;
      space_cv_.notify_one();
    }
  }

  void ReaderLoop(int fd) {
    while (true) {
      FrameHeader h;
      absl::Status s = ReadExact(fd, &h, sizeof h);
      const int64_t begin_ns = MonotonicNowNs();
      if (!s.ok()) return Fail(s);
      s = CheckFrameHeader(h);
      if (s.ok()) s = validator_ ? validator_(h) : absl::FailedPreconditionError("tcp: no validator");
      if (s.ok() && h.payload_bytes > pool_->buffer_bytes()) {
        s = absl::OutOfRangeError(absl::StrCat("tcp: frame payload of ", h.payload_bytes,
                                               " bytes exceeds the receive buffer of ",
                                               pool_->buffer_bytes()));
      }
      if (!s.ok()) {
        frames_rejected_.fetch_add(1);
        return Fail(s);  // payload left unread
      }
      ReceivedFrame f;
      PayloadPlacement placement;
      if (placer_ && placer_(h, &placement)) {
        // Straight to its destination: no receive buffer, no copy afterwards. At most a few
        // such frames wait for the consumer (the slot returns when it pops the frame).
        if (!rx_.ReservePlaced()) return;
        s = ReadvExact(fd, placement);
        if (!s.ok()) {
          rx_.ReleasePlaced();
          return Fail(s);
        }
        f.placed = placement;
      } else {
        absl::StatusOr<PooledBuffer> buf = pool_->Acquire();
        if (!buf.ok()) return Fail(buf.status());
        s = ReadExact(fd, buf->data(), h.payload_bytes);
        if (!s.ok()) return Fail(s);
        buf->set_size(h.payload_bytes);
        f.payload = std::move(*buf);
      }
      payload_bytes_read_.fetch_add(h.payload_bytes);
      frames_received_.fetch_add(1);
      f.header = h;
      f.recv_begin_ns = begin_ns;
      f.recv_end_ns = MonotonicNowNs();
      if (!rx_.Push(std::move(f))) return;  // failed meanwhile
    }
  }

  std::vector<ScopedFd> fds_;
  std::shared_ptr<BufferPool> pool_;
  HeaderValidator validator_;
  PayloadPlacer placer_;
  TransportInfo info_;

  mutable std::mutex send_mu_;
  std::condition_variable work_cv_;   // writers: a slot is queued (or closing)
  std::condition_variable space_cv_;  // Send: a slot is free
  std::vector<SendSlot> send_ring_ ABSL_GUARDED_BY(send_mu_);
  size_t send_head_ ABSL_GUARDED_BY(send_mu_) = 0;
  size_t queued_ ABSL_GUARDED_BY(send_mu_) = 0;    // in the ring, not yet taken by a writer
  size_t inflight_ ABSL_GUARDED_BY(send_mu_) = 0;  // queued + being written
  bool closed_ ABSL_GUARDED_BY(send_mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(send_mu_);

  internal::RxQueue rx_;
  std::atomic<uint64_t> frames_sent_{0}, frames_received_{0}, frames_rejected_{0},
      payload_bytes_read_{0};
  std::vector<std::thread> readers_, writers_;  // last: started after everything they use
};

absl::StatusOr<std::shared_ptr<BufferPool>> MakePool(const ConnectionOptions& o) {
  if (!o.validator) return absl::InvalidArgumentError("connection options: validator is required");
  return BufferPool::Create(std::max<size_t>(o.recv_buffer_bytes, 1), std::max(1, o.recv_buffers));
}

// ---- TcpListener ---------------------------------------------------------------------------------

class TcpListener final : public Listener {
 public:
  TcpListener(ScopedFd fd, std::string endpoint, TcpTransportOptions options)
      : fd_(std::move(fd)), endpoint_(std::move(endpoint)), options_(std::move(options)) {}

  std::string endpoint() const override { return endpoint_; }

  absl::StatusOr<std::unique_ptr<Connection>> Accept(const ConnectionOptions& options,
                                                     absl::Duration timeout) override {
    KVS_ASSIGN_OR_RETURN(std::shared_ptr<BufferPool> pool, MakePool(options));
    const absl::Time deadline = absl::Now() + timeout;
    std::lock_guard<std::mutex> lock(mu_);
    while (true) {
      KVS_RETURN_IF_ERROR(PollUntil(fd_.get(), POLLIN, deadline));
      ScopedFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c.get() < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
        return absl::UnavailableError(Errno("tcp: accept"));
      }
      SetSocketOptions(c.get(), options_);
      TcpHello hello;
      // A peer gets a bounded time to introduce itself, so a silent client cannot stall Accept.
      absl::Status s = ReadExactUntil(c.get(), &hello, sizeof hello,
                                      std::min(deadline, absl::Now() + absl::Seconds(5)));
      if (!s.ok() || hello.magic != kHelloMagic || hello.version != kHelloVersion ||
          hello.stream_count == 0 || hello.stream_count > kMaxStreams ||
          hello.stream_index >= hello.stream_count) {
        KVS_LOG_WARN("tcp listener {}: dropped a peer with a bad hello ({})", endpoint_,
                     s.ok() ? "bad fields" : s.ToString());
        continue;
      }
      Pending& p = pending_[hello.connection_nonce];
      if (p.fds.empty()) p.fds.resize(hello.stream_count);
      if (p.fds.size() != hello.stream_count || p.fds[hello.stream_index].get() >= 0) {
        KVS_LOG_WARN("tcp listener {}: inconsistent stream hello; dropping the peer", endpoint_);
        pending_.erase(hello.connection_nonce);
        continue;
      }
      p.fds[hello.stream_index] = std::move(c);
      if (++p.have < static_cast<int>(p.fds.size())) continue;
      std::vector<ScopedFd> fds = std::move(p.fds);
      pending_.erase(hello.connection_nonce);
      std::string detail = absl::StrCat("tcp ", fds.size(), fds.size() == 1 ? " stream " : " streams ",
                                        endpoint_);
      return std::unique_ptr<Connection>(
          new TcpConnection(std::move(fds), std::move(pool), options, std::move(detail)));
    }
  }

 private:
  struct Pending {
    std::vector<ScopedFd> fds;
    int have = 0;
  };
  ScopedFd fd_;
  const std::string endpoint_;
  const TcpTransportOptions options_;
  std::mutex mu_;
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
};

// ---- TcpTransport ---------------------------------------------------------------------------------

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(TcpTransportOptions o) : options_(std::move(o)) {}

  absl::string_view name() const override { return "tcp"; }

  absl::StatusOr<std::unique_ptr<Listener>> Listen() override {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(options_.bind_host.c_str(), "0", &hints, &res);
    if (rc != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tcp: cannot resolve '", options_.bind_host, "': ", gai_strerror(rc)));
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
    ScopedFd fd(::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol));
    if (fd.get() < 0) return absl::UnavailableError(Errno("tcp: socket"));
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    SetSocketOptions(fd.get(), options_);  // buffer sizes before listen(): window scaling
    if (::bind(fd.get(), res->ai_addr, res->ai_addrlen) != 0) {
      return absl::UnavailableError(Errno(absl::StrCat("tcp: bind ", options_.bind_host)));
    }
    if (::listen(fd.get(), 128) != 0) return absl::UnavailableError(Errno("tcp: listen"));
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    const int port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                              : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    std::string host = options_.advertise_host.empty() ? options_.bind_host : options_.advertise_host;
    if (host.find(':') != std::string::npos) host = absl::StrCat("[", host, "]");
    return std::unique_ptr<Listener>(
        new TcpListener(std::move(fd), absl::StrCat(host, ":", port), options_));
  }

  absl::StatusOr<std::unique_ptr<Connection>> Connect(absl::string_view endpoint,
                                                      const ConnectionOptions& options,
                                                      absl::Duration timeout) override {
    const int streams = options_.streams;
    if (streams < 1 || streams > kMaxStreams) {
      return absl::InvalidArgumentError(absl::StrCat("tcp: streams ", streams, " not in [1, 64]"));
    }
    KVS_ASSIGN_OR_RETURN(std::shared_ptr<BufferPool> pool, MakePool(options));
    std::string host, port;
    KVS_RETURN_IF_ERROR(SplitHostPort(endpoint, &host, &port));
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
      return absl::UnavailableError(absl::StrCat("tcp: cannot resolve '", host, "': ", gai_strerror(rc)));
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
    const absl::Time deadline = absl::Now() + timeout;
    const uint64_t nonce = RandomId();
    std::vector<ScopedFd> fds;
    for (int i = 0; i < streams; ++i) {
      ScopedFd fd(::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                           res->ai_protocol));
      if (fd.get() < 0) return absl::UnavailableError(Errno("tcp: socket"));
      SetSocketOptions(fd.get(), options_);
      if (::connect(fd.get(), res->ai_addr, res->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) return absl::UnavailableError(Errno(absl::StrCat("tcp: connect ", endpoint)));
        KVS_RETURN_IF_ERROR(PollUntil(fd.get(), POLLOUT, deadline));
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          return absl::UnavailableError(
              absl::StrCat("tcp: connect ", endpoint, ": ", std::strerror(err)));
        }
      }
      int flags = fcntl(fd.get(), F_GETFL);
      fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
      TcpHello hello{};
      hello.magic = kHelloMagic;
      hello.version = kHelloVersion;
      hello.stream_index = static_cast<uint16_t>(i);
      hello.stream_count = static_cast<uint16_t>(streams);
      hello.connection_nonce = nonce;
      iovec iov{&hello, sizeof hello};
      KVS_RETURN_IF_ERROR(WriteAll(fd.get(), &iov, 1));
      fds.push_back(std::move(fd));
    }
    std::string detail = absl::StrCat("tcp ", streams, streams == 1 ? " stream " : " streams ", endpoint);
    return std::unique_ptr<Connection>(
        new TcpConnection(std::move(fds), std::move(pool), options, std::move(detail)));
  }

 private:
  const TcpTransportOptions options_;
};

}  // namespace

std::unique_ptr<Transport> CreateTcpTransport(const TcpTransportOptions& options) {
  return std::make_unique<TcpTransport>(options);
}

}  // namespace kvs::transfer
