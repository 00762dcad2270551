#include "services/transfer/ucx/ucx_transport.h"

#include <poll.h>
#include <sys/stat.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <optional>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "services/transfer/internal/rx_queue.h"
#include "services/transfer/ucx/ucx_handles.h"

namespace kvs::transfer {
namespace {

using ucx::UcpConfigPtr;
using ucx::UcpContextPtr;
using ucx::UcpWorkerAddress;
using ucx::UcpWorkerPtr;
using ucx::UcsError;
using ucx::UcxRegisteredRegion;

// Active-message ids of this transport.
constexpr unsigned kAmHello = 11;      // connector -> acceptor; header WireHello, data = its worker address
constexpr unsigned kAmFrame = 12;      // either way; header WireFrame, data = payload
constexpr unsigned kAmHeartbeat = 13;  // either way; header WirePrefix, no data
constexpr unsigned kAmBye = 14;        // either way; header WirePrefix: the sender closes (like a FIN)
constexpr unsigned kAmHelloAck = 15;   // acceptor -> connector; header WireHelloAck

constexpr uint32_t kHelloMagic = 0x4855564Bu;  // "KVUH"
constexpr uint32_t kHelloVersion = 3;

struct WirePrefix {
  uint64_t conn_id;     // chosen by the connecting side
  uint8_t to_acceptor;  // direction: 1 = connector -> acceptor
  uint8_t pad[7];
};
static_assert(sizeof(WirePrefix) == 16);

// Who a process is on its host, so a same-host peer's death is seen at once (heartbeat mode):
// pid, pid-namespace inode (pids compare only within one namespace) and the process start time
// (so a reused pid is not mistaken for the peer).
struct WireProcess {
  uint32_t pid;
  uint32_t pad;
  uint64_t pidns;
  uint64_t start_ticks;
};
static_assert(sizeof(WireProcess) == 24);

struct WireHello {
  uint32_t magic;
  uint32_t version;
  uint64_t conn_id;
  uint64_t listener_id;  // which Listener of the worker the connector dialled (0: any)
  uint8_t heartbeat;     // the connector runs heartbeats (no UCX peer error handling)
  uint8_t pad[7];
  WireProcess process;
};
static_assert(sizeof(WireHello) == 56);

struct WireHelloAck {
  WirePrefix prefix;
  WireProcess process;
};
static_assert(sizeof(WireHelloAck) == 40);

uint64_t PidNamespace() {
  struct stat st;
  return ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

// Field 22 of /proc/<pid>/stat (start time in clock ticks) and the state letter; false when the
// process does not exist.
bool ReadProcStat(uint32_t pid, char* state, uint64_t* start_ticks) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return false;
  char buf[1024];
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');  // the command name may contain spaces
  if (p == nullptr) return false;
  ++p;
  *state = 0;
  *start_ticks = 0;
  int field = 2;  // just after ")" comes field 3 (state)
  for (const char* tok = std::strtok(const_cast<char*>(p), " "); tok != nullptr; tok = std::strtok(nullptr, " ")) {
    ++field;
    if (field == 3) *state = tok[0];
    if (field == 22) {
      *start_ticks = std::strtoull(tok, nullptr, 10);
      break;
    }
  }
  return true;
}

WireProcess SelfProcess() {
  WireProcess w{};
  w.pid = static_cast<uint32_t>(::getpid());
  w.pidns = PidNamespace();
  char state;
  ReadProcStat(w.pid, &state, &w.start_ticks);
  return w;
}

struct WireFrame {
  WirePrefix prefix;
  FrameHeader frame;
};
static_assert(sizeof(WireFrame) == 144);

int64_t NowNs() { return MonotonicNowNs(); }

constexpr int kMaxPlaced = 4;  // in-place payloads being received or queued per connection

// The lanes of an endpoint, read back from ucp_ep_print_info (UCX 1.13 has no ucp_ep_query
// field for them).
struct EpLanes {
  std::string am;                       // transport of the active-message lane ("tcp", "posix", ...)
  std::vector<std::string> data;        // transports of every lane that carries data
  std::string description;              // "am=tcp/lo.0 rma_bw=cma/memory.0"
};

EpLanes QueryLanes(ucp_ep_h ep) {
  EpLanes out;
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  if (f == nullptr) return out;
  ucp_ep_print_info(ep, f);
  fclose(f);
  std::string text(buf, len);
  free(buf);
  std::vector<std::string> parts;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const size_t at = line.find("lane[");
    if (at == absl::string_view::npos) continue;
    std::vector<absl::string_view> tok = absl::StrSplit(line.substr(at), ' ', absl::SkipWhitespace());
    if (tok.size() < 2) continue;
    absl::string_view tl_dev = tok[1];  // "0:tcp/lo.0"
    const size_t colon = tl_dev.find(':');
    if (colon != absl::string_view::npos) tl_dev = tl_dev.substr(colon + 1);
    const std::string tl(tl_dev.substr(0, tl_dev.find('/')));
    bool is_am = false, is_data = false;
    std::vector<std::string> roles;
    bool after_arrow = false;
    for (size_t i = 2; i < tok.size(); ++i) {
      if (tok[i] == "->") {
        after_arrow = true;
        ++i;  // skip the remote md token
        continue;
      }
      if (!after_arrow) continue;
      roles.emplace_back(tok[i]);
      if (tok[i] == "am") is_am = true;
      if (tok[i] == "am" || absl::StartsWith(tok[i], "am_bw") || absl::StartsWith(tok[i], "rma") ||
          tok[i] == "tag" || absl::StartsWith(tok[i], "amo")) {
        is_data = true;
      }
    }
    if (is_am) out.am = tl;
    if (is_data && std::find(out.data.begin(), out.data.end(), tl) == out.data.end()) {
      out.data.push_back(tl);
    }
    parts.push_back(absl::StrCat(std::string(tl_dev), "(", absl::StrJoin(roles, ","), ")"));
  }
  out.description = absl::StrJoin(parts, " ");
  return out;
}

class UcxCore;

// Pending incoming frame: header checked, payload not yet fetched (no free buffer yet).
struct HeldAm {
  FrameHeader header;
  void* data = nullptr;  // rendezvous or persistent eager descriptor
  size_t length = 0;
  bool rndv = false;
  int64_t begin_ns = 0;
  PayloadPlacement placement;  // count > 0: the payload goes there, not into a buffer
};

// ---- UcxConnection (shared with the core's maps and UCX callbacks) -------------------------------

class UcxConnection : public std::enable_shared_from_this<UcxConnection> {
 public:
  UcxConnection(std::shared_ptr<UcxCore> core, uint64_t conn_id, bool acceptor_side, bool heartbeat,
                std::shared_ptr<BufferPool> pool, const ConnectionOptions& options);
  ~UcxConnection();

  // --- user threads ---
  absl::Status SendV(const FrameHeader& header, absl::Span<const absl::Span<const uint8_t>> parts,
                     SendCallback done);
  absl::StatusOr<ReceivedFrame> Receive(absl::Duration timeout) { return rx_.Pop(timeout); }
  absl::Status status() const { return rx_.status(); }
  const TransportInfo& info() const { return info_; }
  ConnectionCounters counters() const;
  void Close();
  void Fail(const absl::Status& s);

  // --- progress thread ---
  absl::Status Establish(const std::string& remote_address, ucp_err_handling_mode_t mode,
                         const std::string& require);
  ucs_status_t OnFrame(const FrameHeader& h, void* data, size_t length, bool rndv, bool from_callback);
  void OnHeartbeat() { last_heard_ns_.store(NowNs()); }
  // A same-host peer process to watch (heartbeat mode).
  void SetPeerProcess(const WireProcess& p) {
    if (p.pid != 0 && p.pidns != 0 && p.pidns == PidNamespace()) {
      peer_pid_ = p.pid;
      peer_start_ticks_ = p.start_ticks;
    }
  }
  void SendHelloAck();
  void OnBye() { Fail(absl::UnavailableError("ucx: peer closed the connection")); }
  void OnKick();
  void OnTimer(int64_t now);
  void OnEpError(ucs_status_t s);
  bool Retired() const { return retired_; }
  void ForceClose();
  uint64_t conn_id() const { return conn_id_; }
  bool acceptor_side() const { return acceptor_side_; }
  ucp_ep_h ep() const { return ep_; }  // progress thread
  bool kicked = false;  // guarded by the core's mutex

  TransportInfo info_;

 private:
  struct SendOp {
    WireFrame wire;
    absl::Span<const uint8_t> payload;  // one part (contiguous)
    std::array<ucp_dt_iov_t, kMaxPayloadParts> iov{};
    int parts = 0;                      // > 1: iov datatype
    SendCallback done;
    int64_t begin_ns = 0;
    UcxConnection* conn = nullptr;
    int index = 0;
    bool in_ucx = false;     // a UCX request holds it
    bool abandoned = false;  // the user was told it failed; UCX may still hold it (see AbandonSends)
  };
  struct RecvOp {
    FrameHeader header;
    PooledBuffer buffer;
    PayloadPlacement placement;  // placed receive (no buffer)
    std::array<ucp_dt_iov_t, kMaxPayloadParts> iov{};
    int64_t begin_ns = 0;
    size_t length = 0;
    UcxConnection* conn = nullptr;
    int index = 0;
  };

  static void OnSendDone(void* request, ucs_status_t status, void* user_data);
  static void OnRecvDone(void* request, ucs_status_t status, size_t length, void* user_data);
  static void OnHeartbeatSent(void* request, ucs_status_t, void*) { ucp_request_free(request); }
  static void OnCloseDone(void* request, ucs_status_t, void* user_data);

  void CompleteSend(SendOp* op, ucs_status_t status);
  void StartReceive(HeldAm held, PooledBuffer buf, bool from_callback);
  bool CanStart(const HeldAm& held, std::optional<PooledBuffer>* buf);
  void FinishReceive(RecvOp* op);
  void DrainHeld();
  void FailQueuedSends();
  void AbandonSends();
  void ReleaseHeld();
  void MaybeRetire();
  ucp_mem_h SendMemh(const void* p, size_t n) const;

  std::shared_ptr<UcxCore> core_;
  const uint64_t conn_id_;
  const bool acceptor_side_;
  const bool heartbeat_;
  std::shared_ptr<BufferPool> pool_;
  ucp_mem_h pool_memh_ = nullptr;
  HeaderValidator validator_;
  PayloadPlacer placer_;

  // Send side: a fixed ring of op slots.
  mutable std::mutex send_mu_;
  std::condition_variable space_cv_;
  std::vector<SendOp> ops_;
  std::vector<int> free_ops_;         // guarded by send_mu_
  std::deque<int> submit_;            // guarded by send_mu_ (bounded by ops_.size())
  int ucx_sends_outstanding_ = 0;     // progress thread
  int sends_abandoned_ = 0;           // progress thread
  bool closed_ = false;               // guarded by send_mu_

  // Receive side (progress thread only).
  std::vector<RecvOp> recv_ops_;
  std::vector<int> free_recv_ops_;
  int recvs_outstanding_ = 0;
  std::deque<HeldAm> held_;
  internal::RxQueue rx_;

  // Progress thread only.
  ucp_ep_h ep_ = nullptr;
  bool closing_ = false;
  bool close_pending_ = false;
  bool retired_ = false;
  std::atomic<int64_t> last_heard_ns_{0};
  int64_t next_heartbeat_ns_ = 0;
  uint32_t peer_pid_ = 0;  // progress thread
  uint64_t peer_start_ticks_ = 0;

  // Close() waits for retirement.
  std::mutex retire_mu_;
  std::condition_variable retire_cv_;
  bool retired_signal_ = false;

  std::atomic<uint64_t> frames_sent_{0}, frames_received_{0}, frames_rejected_{0},
      payload_bytes_read_{0};

  friend class UcxCore;
};

// ---- UcxCore: context, worker, progress thread ---------------------------------------------------

class UcxCore : public std::enable_shared_from_this<UcxCore> {
 public:
  static absl::StatusOr<std::shared_ptr<UcxCore>> Create(const UcxTransportOptions& o);
  ~UcxCore();

  const UcxTransportOptions& options() const { return options_; }
  ucp_worker_h worker() const { return worker_.get(); }
  ucp_context_h context() const { return context_.get(); }
  std::string address_hex() const { return absl::BytesToHexString(address_->bytes()); }
  std::string address_bytes() const { return address_->bytes(); }
  bool heartbeat_mode() const { return heartbeat_mode_; }

  // Runs fn on the progress thread and waits for it.
  void Run(const std::function<void()>& fn);
  // Asks the progress thread to call c->OnKick() soon.
  void Kick(UcxConnection* c);
  void Shutdown();

  // Progress thread: connection registry.
  void AddConnection(const std::shared_ptr<UcxConnection>& c);
  void RemoveConnection(UcxConnection* c);
  // Removes a closed connection; one UCX still holds requests of is parked until the worker goes.
  void RetireConnection(UcxConnection* c);

  // Accept support.
  struct PendingHello {
    uint64_t conn_id = 0;
    std::string address;
    bool heartbeat = false;
    uint64_t listener_id = 0;
    WireProcess process{};
    std::deque<HeldAm> held;  // frames that arrived before Accept
  };
  // Blocks until a hello for `listener_id` is pending (not taken: see TakeHello).
  absl::Status WaitForHello(uint64_t listener_id, absl::Time deadline);
  // Progress thread only: takes the oldest hello for `listener_id`. Taking it and registering
  // its connection in one progress-thread step leaves no moment in which a frame of that
  // connection finds neither (a frame then would be refused as "not connected").
  std::optional<PendingHello> TakeHello(uint64_t listener_id);

  // Send-memory registrations, looked up per send.
  void AddRegion(UcxRegisteredRegion* r);
  void RemoveRegion(UcxRegisteredRegion* r);
  ucp_mem_h FindMemh(const void* p, size_t n) const;

 private:
  explicit UcxCore(const UcxTransportOptions& o) : options_(o) {}
  void Loop();
  static ucs_status_t OnHelloAm(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnFrameAm(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnHeartbeatAm(void* arg, const void* header, size_t header_length, void* data,
                                    size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnByeAm(void* arg, const void* header, size_t header_length, void* data,
                              size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnHelloAckAm(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t* param);
  UcxConnection* Find(uint64_t id, bool to_acceptor) const;

  const UcxTransportOptions options_;
  bool heartbeat_mode_ = false;
  UcpContextPtr context_;
  UcpWorkerPtr worker_;
  std::unique_ptr<UcpWorkerAddress> address_;
  int efd_ = -1;

  std::mutex mu_;
  std::deque<std::function<void()>> posted_;  // guarded by mu_
  std::vector<UcxConnection*> kicked_;        // guarded by mu_
  bool stop_ = false;                         // guarded by mu_

  std::mutex hello_mu_;
  std::condition_variable hello_cv_;
  std::deque<PendingHello> hellos_;  // guarded by hello_mu_

  mutable std::mutex region_mu_;
  std::vector<UcxRegisteredRegion*> regions_;  // guarded by region_mu_

  // Progress thread only.
  absl::flat_hash_map<uint64_t, std::shared_ptr<UcxConnection>> to_acceptor_, to_connector_;
  // Closed connections whose abandoned requests UCX may still complete: destroyed after the
  // worker (Shutdown).
  std::vector<std::shared_ptr<UcxConnection>> graveyard_;

  std::thread thread_;  // last
};

absl::StatusOr<std::shared_ptr<UcxCore>> UcxCore::Create(const UcxTransportOptions& o) {
  std::shared_ptr<UcxCore> core(new UcxCore(o));
  ucp_config_t* raw_cfg = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &raw_cfg);
  if (s != UCS_OK) return UcsError("config read", s);
  UcpConfigPtr cfg(raw_cfg);
  auto modify = [&](const std::string& k, const std::string& v) -> absl::Status {
    ucs_status_t ms = ucp_config_modify(cfg.get(), k.c_str(), v.c_str());
    if (ms != UCS_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat("ucx: config ", k, "=", v, ": ", ucs_status_string(ms)));
    }
    return absl::OkStatus();
  };
  if (!o.tls.empty()) KVS_RETURN_IF_ERROR(modify("TLS", o.tls));
  if (!o.net_devices.empty()) KVS_RETURN_IF_ERROR(modify("NET_DEVICES", o.net_devices));
  for (const auto& [k, v] : o.config) KVS_RETURN_IF_ERROR(modify(k, v));

  // UCX 1.13's shared-memory and self transports have no peer-failure support: endpoints there
  // use no UCX error handling and the connection runs a heartbeat instead.
  const std::vector<std::string> tls = absl::StrSplit(o.tls, ',', absl::SkipWhitespace());
  bool network = tls.empty();
  for (const std::string& t : tls) {
    if (t != "shm" && t != "sm" && t != "self" && t != "posix" && t != "sysv" && t != "cma" &&
        t != "knem" && t != "xpmem") {
      network = true;
    }
  }
  core->heartbeat_mode_ = !network;

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED |
                      UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 1;  // ucp_mem_map from user threads
  params.name = "kvshuttle";
  ucp_context_h ctx = nullptr;
  s = ucp_init(&params, cfg.get(), &ctx);
  if (s != UCS_OK) return UcsError(absl::StrCat("init (tls '", o.tls, "')"), s);
  core->context_.reset(ctx);

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches the worker
  ucp_worker_h w = nullptr;
  s = ucp_worker_create(ctx, &wp, &w);
  if (s != UCS_OK) return UcsError("worker create", s);
  core->worker_.reset(w);

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS | UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  s = ucp_worker_query(w, &attr);
  if (s != UCS_OK) return UcsError("worker query", s);
  core->address_ = std::make_unique<UcpWorkerAddress>(w, attr.address, attr.address_length);
  if (attr.max_am_header < sizeof(WireFrame)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ucx: active-message headers are limited to ", attr.max_am_header, " bytes, frames need ",
        sizeof(WireFrame)));
  }
  s = ucp_worker_get_efd(w, &core->efd_);
  if (s != UCS_OK) return UcsError("worker efd", s);

  struct Handler {
    unsigned id;
    ucp_am_recv_callback_t cb;
  };
  for (const Handler& h : {Handler{kAmHello, &UcxCore::OnHelloAm}, Handler{kAmFrame, &UcxCore::OnFrameAm},
                           Handler{kAmHeartbeat, &UcxCore::OnHeartbeatAm},
                           Handler{kAmBye, &UcxCore::OnByeAm},
                           Handler{kAmHelloAck, &UcxCore::OnHelloAckAm}}) {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    hp.id = h.id;
    hp.cb = h.cb;
    hp.arg = core.get();
    hp.flags = UCP_AM_FLAG_WHOLE_MSG | UCP_AM_FLAG_PERSISTENT_DATA;
    s = ucp_worker_set_am_recv_handler(w, &hp);
    if (s != UCS_OK) return UcsError("am handler", s);
  }
  core->thread_ = std::thread([c = core.get()] { c->Loop(); });
  KVS_LOG_INFO("ucx worker up: tls '{}', devices '{}', peer-failure detection {}", o.tls.empty() ? "all" : o.tls,
               o.net_devices.empty() ? "all" : o.net_devices,
               core->heartbeat_mode_ ? "heartbeat" : "ucx error handling");
  return core;
}

UcxCore::~UcxCore() { Shutdown(); }

void UcxCore::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || !thread_.joinable()) return;
  }
  Run([this] {
    // Connections still registered (never closed, or closed with requests UCX kept): close them.
    std::vector<std::shared_ptr<UcxConnection>> all;
    for (auto& [id, c] : to_acceptor_) all.push_back(c);
    for (auto& [id, c] : to_connector_) all.push_back(c);
    for (auto& c : all) c->ForceClose();
    const int64_t deadline = NowNs() + 2'000'000'000;
    while (NowNs() < deadline) {
      bool busy = false;
      for (auto& c : all) busy |= !c->Retired();
      if (!busy) break;
      ucp_worker_progress(worker_.get());
    }
    for (auto& c : all) graveyard_.push_back(c);
    to_acceptor_.clear();
    to_connector_.clear();
    std::lock_guard<std::mutex> lock(hello_mu_);
    for (PendingHello& h : hellos_) {
      for (HeldAm& a : h.held) ucp_am_data_release(worker_.get(), a.data);
    }
    hellos_.clear();
  });
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  ucp_worker_signal(worker_.get());
  thread_.join();
  // The worker goes first; connections UCX still referenced are destroyed after it. (Their
  // receive-pool registrations need only the context, which lives while anything holds it.)
  address_.reset();
  worker_.reset();
  graveyard_.clear();
}

void UcxCore::Run(const std::function<void()>& fn) {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      KVS_LOG_ERROR("ucx: operation after the transport was destroyed; ignored");
      return;
    }
    posted_.push_back([&] {
      fn();
      std::lock_guard<std::mutex> l(m);
      done = true;
      cv.notify_all();
    });
  }
  ucp_worker_signal(worker_.get());
  std::unique_lock<std::mutex> lock(m);
  cv.wait(lock, [&] { return done; });
}

void UcxCore::RetireConnection(UcxConnection* c) {
  if (!c->Retired()) {
    auto& map = c->acceptor_side() ? to_acceptor_ : to_connector_;
    auto it = map.find(c->conn_id());
    if (it != map.end() && it->second.get() == c) graveyard_.push_back(it->second);
  }
  RemoveConnection(c);
}

void UcxCore::Kick(UcxConnection* c) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || c->kicked) return;
    c->kicked = true;
    kicked_.push_back(c);
  }
  ucp_worker_signal(worker_.get());
}

void UcxCore::AddConnection(const std::shared_ptr<UcxConnection>& c) {
  (c->acceptor_side() ? to_acceptor_ : to_connector_)[c->conn_id()] = c;
}

void UcxCore::RemoveConnection(UcxConnection* c) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    kicked_.erase(std::remove(kicked_.begin(), kicked_.end(), c), kicked_.end());
    c->kicked = false;
  }
  auto& map = c->acceptor_side() ? to_acceptor_ : to_connector_;
  auto it = map.find(c->conn_id());
  if (it != map.end() && it->second.get() == c) map.erase(it);  // may destroy c: last statement
}

UcxConnection* UcxCore::Find(uint64_t id, bool to_acceptor) const {
  const auto& map = to_acceptor ? to_acceptor_ : to_connector_;
  auto it = map.find(id);
  return it == map.end() ? nullptr : it->second.get();
}

absl::Status UcxCore::WaitForHello(uint64_t listener_id, absl::Time deadline) {
  auto pending = [&] {
    for (const PendingHello& h : hellos_) {
      if (h.listener_id == listener_id || h.listener_id == 0) return true;
    }
    return false;
  };
  std::unique_lock<std::mutex> lock(hello_mu_);
  const absl::Time limit = std::min(deadline, absl::Now() + absl::Hours(24 * 365));
  if (!hello_cv_.wait_until(lock, absl::ToChronoTime(limit), pending)) {
    return absl::DeadlineExceededError("ucx: no peer connected in time");
  }
  return absl::OkStatus();
}

std::optional<UcxCore::PendingHello> UcxCore::TakeHello(uint64_t listener_id) {
  std::lock_guard<std::mutex> lock(hello_mu_);
  for (auto it = hellos_.begin(); it != hellos_.end(); ++it) {
    if (it->listener_id != listener_id && it->listener_id != 0) continue;
    PendingHello h = std::move(*it);
    hellos_.erase(it);
    return h;
  }
  return std::nullopt;
}

void UcxCore::AddRegion(UcxRegisteredRegion* r) {
  std::lock_guard<std::mutex> lock(region_mu_);
  regions_.push_back(r);
}

void UcxCore::RemoveRegion(UcxRegisteredRegion* r) {
  std::lock_guard<std::mutex> lock(region_mu_);
  regions_.erase(std::remove(regions_.begin(), regions_.end(), r), regions_.end());
}

ucp_mem_h UcxCore::FindMemh(const void* p, size_t n) const {
  std::lock_guard<std::mutex> lock(region_mu_);
  for (const UcxRegisteredRegion* r : regions_) {
    if (r->Contains(p, n)) return r->memh();
  }
  return nullptr;
}

void UcxCore::Loop() {
  const int64_t busy_ns = absl::ToInt64Nanoseconds(options_.busy_poll);
  const int64_t hb_ns = absl::ToInt64Nanoseconds(options_.heartbeat_interval);
  int64_t last_event = NowNs();
  int64_t next_timer = last_event + hb_ns;
  std::deque<std::function<void()>> posted;
  std::vector<UcxConnection*> kicked;
  kicked.reserve(64);
  while (true) {
    bool did = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ && posted_.empty()) break;
      posted.swap(posted_);
      kicked.swap(kicked_);
      for (UcxConnection* c : kicked) c->kicked = false;
    }
    for (auto& fn : posted) fn();
    did |= !posted.empty();
    posted.clear();
    for (UcxConnection* c : kicked) {
      if (Find(c->conn_id(), c->acceptor_side()) == c) c->OnKick();
    }
    did |= !kicked.empty();
    kicked.clear();
    while (ucp_worker_progress(worker_.get()) != 0) did = true;
    const int64_t now = NowNs();
    if (now >= next_timer) {
      if (now - next_timer > 4 * hb_ns) {
        // The progress thread itself did not run (CPU starvation, a stalled VM): peers may see
        // silence from us too. Worth knowing when a heartbeat timeout follows.
        KVS_LOG_WARN("ucx progress thread stalled for {} ms", (now - next_timer + hb_ns) / 1000000);
      }
      std::vector<std::shared_ptr<UcxConnection>> all;
      for (auto& [id, c] : to_acceptor_) all.push_back(c);
      for (auto& [id, c] : to_connector_) all.push_back(c);
      for (auto& c : all) c->OnTimer(now);
      next_timer = now + hb_ns;
    }
    if (did) {
      last_event = now;
      continue;
    }
    if (now - last_event < busy_ns) continue;
    const ucs_status_t s = ucp_worker_arm(worker_.get());
    if (s == UCS_ERR_BUSY) continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!posted_.empty() || !kicked_.empty() || stop_) continue;
    }
    const int64_t wait_ns = std::max<int64_t>(next_timer - NowNs(), 1'000'000);
    pollfd p{efd_, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<int64_t>(wait_ns / 1'000'000, 100)));
    last_event = NowNs();
  }
}

ucs_status_t UcxCore::OnHelloAm(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param) {
  auto* core = static_cast<UcxCore*>(arg);
  const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
  WireHello hello;
  if (header_length != sizeof hello || rndv || length == 0 || length > 65536) {
    KVS_LOG_WARN("ucx: dropped a malformed hello");
    return rndv ? UCS_ERR_INVALID_PARAM : UCS_OK;
  }
  std::memcpy(&hello, header, sizeof hello);
  if (hello.magic != kHelloMagic || hello.version != kHelloVersion) {
    KVS_LOG_WARN("ucx: dropped a hello with magic {:x} version {}", hello.magic, hello.version);
    return UCS_OK;
  }
  PendingHello p;
  p.conn_id = hello.conn_id;
  p.address.assign(static_cast<const char*>(data), length);
  p.heartbeat = hello.heartbeat != 0;
  p.listener_id = hello.listener_id;
  p.process = hello.process;
  std::lock_guard<std::mutex> lock(core->hello_mu_);
  core->hellos_.push_back(std::move(p));
  core->hello_cv_.notify_all();
  return UCS_OK;
}

ucs_status_t UcxCore::OnFrameAm(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param) {
  auto* core = static_cast<UcxCore*>(arg);
  const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
  if (header_length != sizeof(WireFrame)) {
    KVS_LOG_WARN("ucx: dropped a frame with a {}-byte header", header_length);
    return rndv ? UCS_ERR_INVALID_PARAM : UCS_OK;
  }
  WireFrame w;
  std::memcpy(&w, header, sizeof w);
  if (UcxConnection* c = core->Find(w.prefix.conn_id, w.prefix.to_acceptor != 0)) {
    return c->OnFrame(w.frame, data, length, rndv, /*from_callback=*/true);
  }
  if (w.prefix.to_acceptor) {
    // Arrived before Accept(): keep the descriptor (payload not fetched) with its hello.
    std::lock_guard<std::mutex> lock(core->hello_mu_);
    for (PendingHello& h : core->hellos_) {
      if (h.conn_id != w.prefix.conn_id) continue;
      HeldAm a;
      a.header = w.frame;
      a.data = data;
      a.length = length;
      a.rndv = rndv;
      a.begin_ns = NowNs();
      h.held.push_back(a);
      return UCS_INPROGRESS;
    }
  }
  return rndv ? UCS_ERR_NOT_CONNECTED : UCS_OK;  // unknown connection: dropped unread
}

ucs_status_t UcxCore::OnHeartbeatAm(void* arg, const void* header, size_t header_length, void*,
                                    size_t, const ucp_am_recv_param_t* param) {
  auto* core = static_cast<UcxCore*>(arg);
  if (header_length != sizeof(WirePrefix)) return UCS_OK;
  WirePrefix p;
  std::memcpy(&p, header, sizeof p);
  if (UcxConnection* c = core->Find(p.conn_id, p.to_acceptor != 0)) c->OnHeartbeat();
  (void)param;
  return UCS_OK;
}

ucs_status_t UcxCore::OnByeAm(void* arg, const void* header, size_t header_length, void*, size_t,
                              const ucp_am_recv_param_t*) {
  auto* core = static_cast<UcxCore*>(arg);
  if (header_length != sizeof(WirePrefix)) return UCS_OK;
  WirePrefix p;
  std::memcpy(&p, header, sizeof p);
  if (UcxConnection* c = core->Find(p.conn_id, p.to_acceptor != 0)) c->OnBye();
  return UCS_OK;
}

ucs_status_t UcxCore::OnHelloAckAm(void* arg, const void* header, size_t header_length, void*, size_t,
                                   const ucp_am_recv_param_t*) {
  auto* core = static_cast<UcxCore*>(arg);
  if (header_length != sizeof(WireHelloAck)) return UCS_OK;
  WireHelloAck a;
  std::memcpy(&a, header, sizeof a);
  if (UcxConnection* c = core->Find(a.prefix.conn_id, a.prefix.to_acceptor != 0)) {
    c->OnHeartbeat();
    c->SetPeerProcess(a.process);
  }
  return UCS_OK;
}

// ---- UcxConnection implementation ------------------------------------------------------------

UcxConnection::UcxConnection(std::shared_ptr<UcxCore> core, uint64_t conn_id, bool acceptor_side,
                             bool heartbeat, std::shared_ptr<BufferPool> pool,
                             const ConnectionOptions& options)
    : core_(std::move(core)),
      conn_id_(conn_id),
      acceptor_side_(acceptor_side),
      heartbeat_(heartbeat),
      pool_(std::move(pool)),
      validator_(options.validator),
      placer_(options.placer),
      ops_(std::max(1, options.max_inflight_sends)),
      recv_ops_(pool_->count() + kMaxPlaced),
      rx_(pool_->count(), kMaxPlaced) {
  rx_.SetPlacedReleaseHook([this] { core_->Kick(this); });
  for (int i = static_cast<int>(ops_.size()) - 1; i >= 0; --i) {
    ops_[i].conn = this;
    ops_[i].index = i;
    free_ops_.push_back(i);
  }
  for (int i = static_cast<int>(recv_ops_.size()) - 1; i >= 0; --i) {
    recv_ops_[i].conn = this;
    recv_ops_[i].index = i;
    free_recv_ops_.push_back(i);
  }
  info_.kind = "ucx";
  last_heard_ns_.store(NowNs());
}

UcxConnection::~UcxConnection() = default;

absl::Status UcxConnection::Establish(const std::string& remote_address, ucp_err_handling_mode_t mode,
                                      const std::string& require) {
  // Register the receive pool once; the registration lives as long as the pool's memory.
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  mp.address = pool_->region().data();
  mp.length = pool_->region().size();
  ucp_mem_h memh = nullptr;
  ucs_status_t s = ucp_mem_map(core_->context(), &mp, &memh);
  if (s != UCS_OK) return UcsError("register receive pool", s);
  pool_->Attach(std::make_shared<UcxRegisteredRegion>(core_, core_->context(), memh,
                                                      pool_->region().data(), pool_->region().size()));
  pool_memh_ = memh;

  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  ep.address = reinterpret_cast<const ucp_address_t*>(remote_address.data());
  ep.err_mode = mode;
  if (mode == UCP_ERR_HANDLING_MODE_PEER) {
    ep.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.err_handler.cb = [](void* arg, ucp_ep_h, ucs_status_t st) {
      static_cast<UcxConnection*>(arg)->OnEpError(st);
    };
    ep.err_handler.arg = this;
  }
  s = ucp_ep_create(core_->worker(), &ep, &ep_);
  if (s != UCS_OK) {
    ep_ = nullptr;
    return UcsError("endpoint create", s);
  }
  const EpLanes lanes = QueryLanes(ep_);
  info_.lane = lanes.am;
  {
    const std::vector<std::string> zc = absl::StrSplit(core_->options().zero_copy_lanes, ',', absl::SkipWhitespace());
    info_.vectored_zero_copy = !lanes.am.empty() && std::find(zc.begin(), zc.end(), lanes.am) != zc.end();
  }
  info_.detail = absl::StrCat("ucx ", lanes.description);
  KVS_LOG_INFO("ucx connection {:x} ({}): lanes {}", conn_id_, acceptor_side_ ? "accepted" : "connected",
               lanes.description);
  if (!require.empty()) {
    const std::vector<std::string> allowed = absl::StrSplit(require, ',', absl::SkipWhitespace());
    std::vector<std::string> bad;
    for (const std::string& t : lanes.data) {
      if (std::find(allowed.begin(), allowed.end(), t) == allowed.end()) bad.push_back(t);
    }
    if (lanes.am.empty() || !bad.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "ucx selected ", lanes.description.empty() ? "no lanes" : lanes.description,
          ", but require_transport is '", require, "'"));
    }
  }
  return absl::OkStatus();
}

ConnectionCounters UcxConnection::counters() const {
  ConnectionCounters c;
  c.frames_sent = frames_sent_.load();
  c.frames_received = frames_received_.load();
  c.frames_rejected = frames_rejected_.load();
  c.payload_bytes_read = payload_bytes_read_.load();
  c.recv_buffers_in_use = pool_->in_use();
  return c;
}

absl::Status UcxConnection::SendV(const FrameHeader& header,
                                  absl::Span<const absl::Span<const uint8_t>> parts, SendCallback done) {
  if (parts.size() > static_cast<size_t>(kMaxPayloadParts)) {
    return absl::InvalidArgumentError("ucx: too many payload parts");
  }
  {
    std::unique_lock<std::mutex> lock(send_mu_);
    space_cv_.wait(lock, [&] { return closed_ || !rx_.status().ok() || !free_ops_.empty(); });
    if (closed_) return absl::CancelledError("ucx: connection closed");
    KVS_RETURN_IF_ERROR(rx_.status());
    const int i = free_ops_.back();
    free_ops_.pop_back();
    SendOp& op = ops_[i];
    std::memset(&op.wire.prefix, 0, sizeof op.wire.prefix);
    op.wire.prefix.conn_id = conn_id_;
    op.wire.prefix.to_acceptor = acceptor_side_ ? 0 : 1;
    op.wire.frame = header;
    op.parts = static_cast<int>(parts.size());
    op.payload = parts.size() == 1 ? parts[0] : absl::Span<const uint8_t>();
    for (size_t k = 0; k < parts.size(); ++k) {
      op.iov[k].buffer = const_cast<uint8_t*>(parts[k].data());
      op.iov[k].length = parts[k].size();
    }
    op.done = std::move(done);
    submit_.push_back(i);
  }
  core_->Kick(this);
  return absl::OkStatus();
}

void UcxConnection::Fail(const absl::Status& s) {
  if (rx_.Fail(s) && !absl::IsCancelled(s)) {
    KVS_LOG_DEBUG("ucx connection {:x} failed: {}", conn_id_, s.ToString());
  }
  {
    std::lock_guard<std::mutex> lock(send_mu_);
    space_cv_.notify_all();
  }
  core_->Kick(this);  // the progress thread completes queued sends and closes the endpoint
}

void UcxConnection::OnEpError(ucs_status_t s) {
  Fail(absl::UnavailableError(absl::StrCat("ucx: peer lost: ", ucs_status_string(s))));
}

void UcxConnection::OnSendDone(void* request, ucs_status_t status, void* user_data) {
  auto* op = static_cast<SendOp*>(user_data);
  ucp_request_free(request);
  op->conn->CompleteSend(op, status);
}

void UcxConnection::CompleteSend(SendOp* op, ucs_status_t status) {
  --ucx_sends_outstanding_;
  op->in_ucx = false;
  if (op->abandoned) {  // the user heard about it already
    op->abandoned = false;
    --sends_abandoned_;
    std::lock_guard<std::mutex> lock(send_mu_);
    free_ops_.push_back(op->index);
    space_cv_.notify_one();
    MaybeRetire();
    return;
  }
  SendResult r;
  r.wire_begin_ns = op->begin_ns;
  r.wire_end_ns = NowNs();
  if (status == UCS_OK) {
    frames_sent_.fetch_add(1);
  } else {
    absl::Status st = rx_.status();
    const absl::Status err = status == UCS_ERR_REJECTED
                                 ? absl::AbortedError("ucx: the peer rejected the frame")
                                 : UcsError("send", status);
    r.status = st.ok() ? err : st;
    if (status != UCS_ERR_CANCELED) Fail(err);
  }
  SendCallback done = std::move(op->done);
  op->done = nullptr;
  if (done) done(r);
  {
    std::lock_guard<std::mutex> lock(send_mu_);
    free_ops_.push_back(op->index);
    space_cv_.notify_one();
  }
  MaybeRetire();
}

// Without UCX peer error handling (shm, self), UCX 1.13 does not complete a rendezvous send
// whose peer died, not even on a forced endpoint close. Tell the user now; the op slot (and the
// UCX request) stay parked until UCX lets go or the worker is destroyed. Only a dead or failed
// peer could read the payload, so the caller may reuse its buffer.
void UcxConnection::AbandonSends() {
  absl::Status st = rx_.status();
  if (st.ok()) st = absl::UnavailableError("ucx: connection failed");
  for (SendOp& op : ops_) {
    if (!op.in_ucx || op.abandoned) continue;
    op.abandoned = true;
    ++sends_abandoned_;
    SendCallback done = std::move(op.done);
    op.done = nullptr;
    SendResult r;
    r.status = st;
    r.wire_begin_ns = op.begin_ns;
    r.wire_end_ns = NowNs();
    if (done) done(r);
  }
}

void UcxConnection::FailQueuedSends() {
  std::deque<int> queued;
  {
    std::lock_guard<std::mutex> lock(send_mu_);
    queued.swap(submit_);
  }
  absl::Status st = rx_.status();
  if (st.ok()) st = absl::CancelledError("ucx: connection closed");
  for (int i : queued) {
    SendOp& op = ops_[i];
    SendCallback done = std::move(op.done);
    op.done = nullptr;
    SendResult r;
    r.status = st;
    if (done) done(r);
    std::lock_guard<std::mutex> lock(send_mu_);
    free_ops_.push_back(i);
    space_cv_.notify_one();
  }
}

ucp_mem_h UcxConnection::SendMemh(const void* p, size_t n) const { return core_->FindMemh(p, n); }

void UcxConnection::OnKick() {
  if (!rx_.status().ok() || closing_) {
    FailQueuedSends();
    ReleaseHeld();
    if (ep_ != nullptr && !close_pending_) ForceClose();
    if (heartbeat_) AbandonSends();
    MaybeRetire();
    return;
  }
  while (true) {
    int i;
    {
      std::lock_guard<std::mutex> lock(send_mu_);
      if (submit_.empty()) break;
      i = submit_.front();
      submit_.pop_front();
    }
    SendOp& op = ops_[i];
    op.in_ucx = true;
    const bool chunk = op.wire.frame.kind == static_cast<uint8_t>(FrameKind::kChunk);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = &UcxConnection::OnSendDone;
    p.user_data = &op;
    // Chunks go by rendezvous: the receiver pulls the payload only after checking the header
    // and only into a free buffer.
    p.flags = chunk ? UCP_AM_SEND_FLAG_RNDV : 0;
    const void* buffer = op.payload.empty() ? nullptr : op.payload.data();
    size_t count = op.payload.size();
    if (op.parts > 1) {  // scattered payload (e.g. straight from the KV): UCX iov datatype
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
      p.datatype = ucp_dt_make_iov();
      buffer = op.iov.data();
      count = static_cast<size_t>(op.parts);
    } else if (ucp_mem_h memh = SendMemh(op.payload.data(), op.payload.size())) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = memh;
    }
    op.begin_ns = NowNs();
    ++ucx_sends_outstanding_;
    ucs_status_ptr_t req = ucp_am_send_nbx(ep_, kAmFrame, &op.wire, sizeof op.wire, buffer, count, &p);
    if (req == nullptr) {
      CompleteSend(&op, UCS_OK);
    } else if (UCS_PTR_IS_ERR(req)) {
      CompleteSend(&op, UCS_PTR_STATUS(req));
    }
    if (!rx_.status().ok()) return OnKick();
  }
  DrainHeld();
}

ucs_status_t UcxConnection::OnFrame(const FrameHeader& h, void* data, size_t length, bool rndv,
                                    bool from_callback) {
  last_heard_ns_.store(NowNs());
  // Outside a callback this function owns `data`: release it on every path that drops it.
  auto drop = [&](ucs_status_t rndv_status) {
    if (!from_callback) {
      ucp_am_data_release(core_->worker(), data);
      return UCS_OK;
    }
    return rndv ? rndv_status : UCS_OK;
  };
  if (!rx_.status().ok() || closing_) return drop(UCS_ERR_CANCELED);
  absl::Status s = CheckFrameHeader(h);
  if (s.ok()) s = validator_ ? validator_(h) : absl::FailedPreconditionError("ucx: no validator");
  if (s.ok() && h.payload_bytes != length) {
    s = absl::OutOfRangeError(absl::StrCat("ucx: frame header says ", h.payload_bytes,
                                           " payload bytes, the message carries ", length));
  }
  if (s.ok() && h.payload_bytes > pool_->buffer_bytes()) {
    s = absl::OutOfRangeError(absl::StrCat("ucx: frame payload of ", h.payload_bytes,
                                           " bytes exceeds the receive buffer of ", pool_->buffer_bytes()));
  }
  if (!s.ok()) {
    frames_rejected_.fetch_add(1);
    Fail(s);
    return drop(UCS_ERR_REJECTED);  // the payload is never fetched
  }
  HeldAm held;
  held.header = h;
  held.data = data;
  held.length = length;
  held.rndv = rndv;
  held.begin_ns = NowNs();
  if (placer_ && info_.vectored_zero_copy && !placer_(h, &held.placement)) held.placement = PayloadPlacement{};
  std::optional<PooledBuffer> buf;
  if (held_.empty() && CanStart(held, &buf)) {
    StartReceive(held, buf ? std::move(*buf) : PooledBuffer(), from_callback);
    // Eager data was copied; a rendezvous descriptor now belongs to the receive operation.
    return rndv ? UCS_INPROGRESS : UCS_OK;
  }
  // Every buffer is lent: keep the descriptor; the payload is pulled when a buffer returns.
  held_.push_back(held);
  return UCS_INPROGRESS;
}

// A free receive-op slot and either a placed slot (in-place payload) or a pool buffer. Reserves.
bool UcxConnection::CanStart(const HeldAm& held, std::optional<PooledBuffer>* buf) {
  if (free_recv_ops_.empty()) return false;
  if (held.placement.count > 0) return rx_.TryReservePlaced();
  *buf = pool_->TryAcquire();
  return buf->has_value();
}

void UcxConnection::StartReceive(HeldAm held, PooledBuffer buf, bool from_callback) {
  const int i = free_recv_ops_.back();
  free_recv_ops_.pop_back();
  RecvOp& op = recv_ops_[i];
  op.header = held.header;
  op.buffer = std::move(buf);
  op.placement = held.placement;
  op.begin_ns = held.begin_ns;
  op.length = held.length;
  const bool placed = op.placement.count > 0;
  if (!held.rndv) {
    if (placed) {
      const uint8_t* src = static_cast<const uint8_t*>(held.data);
      for (int k = 0; k < op.placement.count; ++k) {
        std::memcpy(op.placement.parts[k].data(), src, op.placement.parts[k].size());
        src += op.placement.parts[k].size();
      }
    } else if (held.length) {
      std::memcpy(op.buffer.data(), held.data, held.length);
    }
    if (!from_callback) ucp_am_data_release(core_->worker(), held.data);
    ++recvs_outstanding_;
    FinishReceive(&op);
    return;
  }
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.recv_am = &UcxConnection::OnRecvDone;
  p.user_data = &op;
  void* dst = op.buffer.data();
  size_t count = held.length;
  if (placed) {  // straight into the destination: UCX iov datatype
    for (int k = 0; k < op.placement.count; ++k) {
      op.iov[k].buffer = op.placement.parts[k].data();
      op.iov[k].length = op.placement.parts[k].size();
    }
    p.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
    p.datatype = ucp_dt_make_iov();
    dst = op.iov.data();
    count = static_cast<size_t>(op.placement.count);
  } else if (pool_memh_ != nullptr) {
    p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    p.memh = pool_memh_;
  }
  ++recvs_outstanding_;
  ucs_status_ptr_t req = ucp_am_recv_data_nbx(core_->worker(), held.data, dst, count, &p);
  if (req == nullptr) {
    FinishReceive(&op);
  } else if (UCS_PTR_IS_ERR(req)) {
    --recvs_outstanding_;
    op.buffer.Reset();
    if (placed) rx_.ReleasePlaced();
    op.placement = PayloadPlacement{};
    free_recv_ops_.push_back(i);
    Fail(UcsError("receive payload", UCS_PTR_STATUS(req)));
  }
}

void UcxConnection::OnRecvDone(void* request, ucs_status_t status, size_t, void* user_data) {
  auto* op = static_cast<RecvOp*>(user_data);
  ucp_request_free(request);
  UcxConnection* c = op->conn;
  if (status != UCS_OK) {
    --c->recvs_outstanding_;
    op->buffer.Reset();
    if (op->placement.count > 0) c->rx_.ReleasePlaced();
    op->placement = PayloadPlacement{};
    c->free_recv_ops_.push_back(op->index);
    c->Fail(status == UCS_ERR_CANCELED ? absl::CancelledError("ucx: receive cancelled")
                                       : UcsError("receive payload", status));
    c->MaybeRetire();
    return;
  }
  c->FinishReceive(op);
}

void UcxConnection::FinishReceive(RecvOp* op) {
  --recvs_outstanding_;
  payload_bytes_read_.fetch_add(op->length);
  frames_received_.fetch_add(1);
  ReceivedFrame f;
  f.header = op->header;
  if (op->placement.count > 0) {
    f.placed = op->placement;
    op->placement = PayloadPlacement{};
  } else {
    f.payload = std::move(op->buffer);
    f.payload.set_size(op->length);
  }
  f.recv_begin_ns = op->begin_ns;
  f.recv_end_ns = NowNs();
  free_recv_ops_.push_back(op->index);
  rx_.Push(std::move(f));  // dropped (buffer returned) if the connection failed meanwhile
  MaybeRetire();
}

void UcxConnection::DrainHeld() {
  while (!held_.empty() && rx_.status().ok()) {
    std::optional<PooledBuffer> buf;
    if (!CanStart(held_.front(), &buf)) return;
    HeldAm h = held_.front();
    held_.pop_front();
    StartReceive(h, buf ? std::move(*buf) : PooledBuffer(), /*from_callback=*/false);
  }
}

void UcxConnection::ReleaseHeld() {
  for (HeldAm& h : held_) ucp_am_data_release(core_->worker(), h.data);
  held_.clear();
}

void UcxConnection::OnTimer(int64_t now) {
  if (!heartbeat_ || ep_ == nullptr || closing_ || !rx_.status().ok()) return;
  if (peer_pid_ != 0) {
    // Same host, same pid namespace: a peer that exited is gone now, not after a timeout.
    char state = 0;
    uint64_t start = 0;
    if (!ReadProcStat(peer_pid_, &state, &start) || state == 'Z' || state == 'X' ||
        start != peer_start_ticks_) {
      Fail(absl::UnavailableError(absl::StrCat("ucx: peer process ", peer_pid_, " exited")));
      return;
    }
  }
  const int64_t timeout = absl::ToInt64Nanoseconds(core_->options().peer_timeout);
  if (now - last_heard_ns_.load() > timeout) {
    Fail(absl::UnavailableError(absl::StrCat("ucx: peer silent for ",
                                             (now - last_heard_ns_.load()) / 1000000,
                                             " ms (heartbeat lost)")));
    return;
  }
  WirePrefix p{};
  p.conn_id = conn_id_;
  p.to_acceptor = acceptor_side_ ? 0 : 1;
  ucp_request_param_t rp{};
  rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_FLAGS;
  rp.cb.send = &UcxConnection::OnHeartbeatSent;
  rp.flags = UCP_AM_SEND_FLAG_EAGER;
  ucs_status_ptr_t req = ucp_am_send_nbx(ep_, kAmHeartbeat, &p, sizeof p, nullptr, 0, &rp);
  if (UCS_PTR_IS_ERR(req)) Fail(UcsError("heartbeat", UCS_PTR_STATUS(req)));
}

void UcxConnection::SendHelloAck() {
  if (ep_ == nullptr) return;
  auto* ack = new WireHelloAck{};
  ack->prefix.conn_id = conn_id_;
  ack->prefix.to_acceptor = 0;
  ack->process = SelfProcess();
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_AM_SEND_FLAG_EAGER;
  p.user_data = ack;
  p.cb.send = [](void* req, ucs_status_t, void* ud) {
    ucp_request_free(req);
    delete static_cast<WireHelloAck*>(ud);
  };
  ucs_status_ptr_t req = ucp_am_send_nbx(ep_, kAmHelloAck, ack, sizeof *ack, nullptr, 0, &p);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) delete ack;
}

void UcxConnection::OnCloseDone(void* request, ucs_status_t, void* user_data) {
  ucp_request_free(request);
  auto* c = static_cast<UcxConnection*>(user_data);
  c->close_pending_ = false;
  c->MaybeRetire();
}

void UcxConnection::ForceClose() {
  closing_ = true;
  FailQueuedSends();
  ReleaseHeld();
  if (ep_ == nullptr || close_pending_) return MaybeRetire();
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  p.cb.send = &UcxConnection::OnCloseDone;
  p.user_data = this;
  // Flush when healthy (delivers what was sent, e.g. the final kDone); force when the peer failed.
  p.flags = rx_.status().ok() || absl::IsCancelled(rx_.status()) ? 0 : UCP_EP_CLOSE_FLAG_FORCE;
  if (p.flags == 0) {
    // Tell the peer, after everything already sent (AMs on an endpoint are ordered): UCX does not
    // notify the remote side of an endpoint closed by a worker-address connection.
    WirePrefix bye{};
    bye.conn_id = conn_id_;
    bye.to_acceptor = acceptor_side_ ? 0 : 1;
    ucp_request_param_t bp{};
    bp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_FLAGS;
    bp.cb.send = &UcxConnection::OnHeartbeatSent;
    bp.flags = UCP_AM_SEND_FLAG_EAGER;
    (void)ucp_am_send_nbx(ep_, kAmBye, &bye, sizeof bye, nullptr, 0, &bp);  // header copied (short)
  }
  ucp_ep_h ep = ep_;
  ep_ = nullptr;
  close_pending_ = true;
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &p);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) close_pending_ = false;
  MaybeRetire();
}

void UcxConnection::MaybeRetire() {
  if (!closing_ || retired_ || close_pending_ || ep_ != nullptr) return;
  if (ucx_sends_outstanding_ > sends_abandoned_ || recvs_outstanding_ > 0) return;
  // Quiescent: nothing the user waits for is left. Retired: UCX holds nothing of ours either.
  retired_ = ucx_sends_outstanding_ == 0;
  std::lock_guard<std::mutex> lock(retire_mu_);
  retired_signal_ = true;
  retire_cv_.notify_all();
}

void UcxConnection::Close() {
  {
    std::lock_guard<std::mutex> lock(send_mu_);
    if (closed_) return;
    closed_ = true;
    space_cv_.notify_all();
  }
  // A healthy connection's status becomes CANCELLED, so ForceClose flushes the endpoint (the
  // last sends, e.g. kDone, are delivered) instead of forcing it.
  Fail(absl::CancelledError("ucx: connection closed"));
  std::shared_ptr<UcxConnection> self = shared_from_this();
  core_->Run([self] { self->ForceClose(); });
  std::unique_lock<std::mutex> lock(retire_mu_);
  const absl::Duration wait = core_->options().peer_timeout + absl::Seconds(1);
  if (!retire_cv_.wait_for(lock, absl::ToChronoNanoseconds(wait), [&] { return retired_signal_; })) {
    KVS_LOG_WARN("ucx connection {:x}: close did not complete in {}; the worker finishes it",
                 conn_id_, absl::FormatDuration(wait));
  }
  lock.unlock();
  core_->Run([self] { self->core_->RetireConnection(self.get()); });
  pool_->SetReleaseHook(nullptr);
  pool_->Close();
  rx_.Clear();
}

// ---- public wrappers -----------------------------------------------------------------------

class UcxConnectionHandle final : public Connection {
 public:
  explicit UcxConnectionHandle(std::shared_ptr<UcxConnection> c) : c_(std::move(c)) {}
  ~UcxConnectionHandle() override { c_->Close(); }
  absl::Status SendV(const FrameHeader& h, absl::Span<const absl::Span<const uint8_t>> parts,
                     SendCallback done) override {
    return c_->SendV(h, parts, std::move(done));
  }
  absl::StatusOr<ReceivedFrame> Receive(absl::Duration timeout) override { return c_->Receive(timeout); }
  absl::Status status() const override { return c_->status(); }
  const TransportInfo& info() const override { return c_->info(); }
  ConnectionCounters counters() const override { return c_->counters(); }
  absl::StatusOr<std::unique_ptr<MemoryRegistration>> RegisterSendMemory(absl::Span<uint8_t> region) override;
  void Close() override { c_->Close(); }

  std::shared_ptr<UcxCore> core;

 private:
  std::shared_ptr<UcxConnection> c_;
};

class UcxSendRegistration final : public Connection::MemoryRegistration {
 public:
  UcxSendRegistration(std::shared_ptr<UcxCore> core, std::unique_ptr<UcxRegisteredRegion> r)
      : core_(std::move(core)), region_(std::move(r)) {
    core_->AddRegion(region_.get());
  }
  ~UcxSendRegistration() override { core_->RemoveRegion(region_.get()); }

 private:
  std::shared_ptr<UcxCore> core_;
  std::unique_ptr<UcxRegisteredRegion> region_;
};

absl::StatusOr<std::unique_ptr<Connection::MemoryRegistration>> UcxConnectionHandle::RegisterSendMemory(
    absl::Span<uint8_t> region) {
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  mp.address = region.data();
  mp.length = region.size();
  ucp_mem_h memh = nullptr;
  ucs_status_t s = ucp_mem_map(core->context(), &mp, &memh);
  if (s != UCS_OK) return UcsError("register send memory", s);
  return std::unique_ptr<MemoryRegistration>(new UcxSendRegistration(
      core, std::make_unique<UcxRegisteredRegion>(core, core->context(), memh, region.data(), region.size())));
}

absl::StatusOr<std::shared_ptr<BufferPool>> MakePool(const ConnectionOptions& o) {
  if (!o.validator) return absl::InvalidArgumentError("connection options: validator is required");
  return BufferPool::Create(std::max<size_t>(o.recv_buffer_bytes, 1), std::max(1, o.recv_buffers));
}

class UcxListener final : public Listener {
 public:
  UcxListener(std::shared_ptr<UcxCore> core, uint64_t id) : core_(std::move(core)), id_(id) {}
  // The worker's address and this listener's id: every Listener of a transport shares the
  // worker, and the id routes each peer's hello to the Listener it dialled.
  std::string endpoint() const override { return absl::StrCat(core_->address_hex(), ".", id_); }

  absl::StatusOr<std::unique_ptr<Connection>> Accept(const ConnectionOptions& options,
                                                     absl::Duration timeout) override {
    KVS_ASSIGN_OR_RETURN(std::shared_ptr<BufferPool> pool, MakePool(options));
    const absl::Time deadline = absl::Now() + std::min(timeout, absl::Hours(24 * 365));
    while (true) {
      KVS_RETURN_IF_ERROR(core_->WaitForHello(id_, deadline));
      std::shared_ptr<UcxConnection> conn;
      absl::Status st;
      core_->Run([&] {
        std::optional<UcxCore::PendingHello> hello = core_->TakeHello(id_);
        if (!hello) return;  // another Accept of this listener took it
        const bool heartbeat = hello->heartbeat || core_->heartbeat_mode();
        conn = std::make_shared<UcxConnection>(core_, hello->conn_id, /*acceptor_side=*/true,
                                               heartbeat, pool, options);
        st = conn->Establish(hello->address,
                             heartbeat ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER,
                             core_->options().require_transport);
        core_->AddConnection(conn);
        pool->SetReleaseHook([c = conn.get(), core = core_.get()] { core->Kick(c); });
        if (!st.ok()) {
          for (HeldAm& a : hello->held) ucp_am_data_release(core_->worker(), a.data);
          conn->Fail(st);
          return;
        }
        if (heartbeat) {
          conn->SetPeerProcess(hello->process);
          conn->SendHelloAck();
        }
        // Frames that arrived before Accept, in order.
        for (HeldAm& a : hello->held) {
          conn->OnFrame(a.header, a.data, a.length, a.rndv, /*from_callback=*/false);
        }
      });
      if (!conn) continue;
      auto handle = std::make_unique<UcxConnectionHandle>(conn);
      handle->core = core_;
      if (!st.ok()) return st;  // handle's destructor closes the endpoint
      return std::unique_ptr<Connection>(std::move(handle));
    }
  }

 private:
  std::shared_ptr<UcxCore> core_;
  const uint64_t id_;
};

class UcxTransport final : public Transport {
 public:
  explicit UcxTransport(std::shared_ptr<UcxCore> core) : core_(std::move(core)) {}
  ~UcxTransport() override { core_->Shutdown(); }
  absl::string_view name() const override { return "ucx"; }

  absl::StatusOr<std::unique_ptr<Listener>> Listen() override {
    return std::unique_ptr<Listener>(new UcxListener(core_, RandomId()));
  }

  absl::StatusOr<std::unique_ptr<Connection>> Connect(absl::string_view endpoint,
                                                      const ConnectionOptions& options,
                                                      absl::Duration) override {
    KVS_ASSIGN_OR_RETURN(std::shared_ptr<BufferPool> pool, MakePool(options));
    // "<hex worker address>.<listener id>" (or a bare worker address: any listener).
    uint64_t listener_id = 0;
    absl::string_view hex = endpoint;
    if (const size_t dot = endpoint.find('.'); dot != absl::string_view::npos) {
      hex = endpoint.substr(0, dot);
      if (!absl::SimpleAtoi(endpoint.substr(dot + 1), &listener_id)) {
        return absl::InvalidArgumentError("ucx endpoint: bad listener id");
      }
    }
    if (hex.empty() || hex.size() % 2 != 0 ||
        hex.find_first_not_of("0123456789abcdefABCDEF") != absl::string_view::npos) {
      return absl::InvalidArgumentError("ucx endpoint must be a hex worker address");
    }
    const std::string address = absl::HexStringToBytes(hex);
    const bool heartbeat = core_->heartbeat_mode();
    auto conn = std::make_shared<UcxConnection>(core_, RandomId(), /*acceptor_side=*/false, heartbeat,
                                                pool, options);
    absl::Status st;
    core_->Run([&] {
      st = conn->Establish(address, heartbeat ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER,
                           core_->options().require_transport);
      core_->AddConnection(conn);
      pool->SetReleaseHook([c = conn.get(), core = core_.get()] { core->Kick(c); });
      if (!st.ok()) {
        conn->Fail(st);
        return;
      }
      // Introduce ourselves: the acceptor opens the reverse endpoint to this address.
      struct Hello {
        WireHello header{};
        std::string address;
      };
      auto* hello = new Hello;
      hello->header.magic = kHelloMagic;
      hello->header.version = kHelloVersion;
      hello->header.conn_id = conn->conn_id();
      hello->header.heartbeat = heartbeat ? 1 : 0;
      hello->header.listener_id = listener_id;
      hello->header.process = SelfProcess();
      hello->address = core_->address_bytes();
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_AM_SEND_FLAG_EAGER;
      p.user_data = hello;
      p.cb.send = [](void* req, ucs_status_t, void* ud) {
        ucp_request_free(req);
        delete static_cast<Hello*>(ud);
      };
      ucs_status_ptr_t req = ucp_am_send_nbx(conn->ep(), kAmHello, &hello->header, sizeof hello->header,
                                             hello->address.data(), hello->address.size(), &p);
      if (req == nullptr || UCS_PTR_IS_ERR(req)) delete hello;
      if (UCS_PTR_IS_ERR(req)) {
        st = UcsError("hello", UCS_PTR_STATUS(req));
        conn->Fail(st);
      }
    });
    auto handle = std::make_unique<UcxConnectionHandle>(conn);
    handle->core = core_;
    if (!st.ok()) return st;
    return std::unique_ptr<Connection>(std::move(handle));
  }

 private:
  std::shared_ptr<UcxCore> core_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Transport>> CreateUcxTransport(const UcxTransportOptions& options) {
  KVS_ASSIGN_OR_RETURN(std::shared_ptr<UcxCore> core, UcxCore::Create(options));
  return std::unique_ptr<Transport>(new UcxTransport(std::move(core)));
}

}  // namespace kvs::transfer
