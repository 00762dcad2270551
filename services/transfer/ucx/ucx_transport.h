// services/transfer/ucx/ucx_transport.h — the data plane over UCX (Debian's UCX 1.13: tcp,
// shared memory (posix/sysv + cma), self; RDMA where the host has it). Built with KVS_WITH_UCX.
//
// One UCP context and one worker per transport, driven by a progress thread that makes every
// UCX call (the worker is single-threaded; other threads hand it work through a queue and
// ucp_worker_signal). Endpoints are created from a peer's worker address: Listener::endpoint() is
// that address in hex, and the connecting side sends its own address in a hello so the accepting
// side opens the reverse endpoint. Frames travel as active messages: the FrameHeader is the AM
// header, so the receiver checks it before deciding to fetch the payload; chunk payloads are
// forced to rendezvous, so a payload the checks refuse is never pulled and a receiver whose
// buffers are all lent simply does not pull yet (back-pressure without unbounded buffering).
// Receive buffers are registered once (ucp_mem_map) per connection pool; senders register their
// encode pool once through Connection::RegisterSendMemory.
//
// Transport selection is configuration (`tls`, passed to ucp_config_modify — never setenv). The
// lanes UCX actually chose are read back from the endpoint, logged, reported in
// TransportInfo, and checked against `require_transport`: anything else fails Connect/Accept
// with FAILED_PRECONDITION (no silent fallback, e.g. to shared memory between two network
// namespaces of one host).
//
// Peer loss: where the transports support it (tcp, RDMA) endpoints use
// UCP_ERR_HANDLING_MODE_PEER and the error callback fails the connection; UCX 1.13's shared
// memory and self transports have no peer-failure support, so there the connection watches the
// same-host peer process (/proc: pid + start time, within one heartbeat tick) and runs an
// application heartbeat for peers that hang, failing after `peer_timeout` of silence. Either
// way: UNAVAILABLE.
//
//   UcxTransportOptions o;  o.tls = "tcp";  o.net_devices = "lo";  o.require_transport = "tcp";
//   KVS_ASSIGN_OR_RETURN(std::unique_ptr<Transport> t, CreateUcxTransport(o));
//
// Thread-safe. Connections must be destroyed before their transport.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/transfer/transport.h"

namespace kvs::transfer {

struct UcxTransportOptions {
  // UCX_TLS-style transport list for this context ("tcp", "shm", "self", "sm,self", "rc,ud"...);
  // empty = UCX's default (all).
  std::string tls;
  // UCX_NET_DEVICES-style device list ("lo", "veth-a", "mlx5_0:1"); empty = all.
  std::string net_devices;
  // Comma list of UCX transport names every data lane of an endpoint must use ("tcp";
  // "posix,sysv,cma"; "self"); empty = accept whatever UCX picks (it is still reported).
  std::string require_transport;
  // Peer-failure detection for transports without UCX peer error handling (shm, self): a
  // heartbeat every `heartbeat_interval`, the peer declared lost after `peer_timeout` of silence.
  absl::Duration heartbeat_interval = absl::Milliseconds(100);
  // (Detection takes peer_timeout plus up to one interval: 1.6 s by default, inside the 2 s
  // ARCHITECTURE.md §8 asks for.)
  absl::Duration peer_timeout = absl::Milliseconds(1500);
  // AM-lane transports on which scattered payloads go as a UCX iov datatype and received
  // payloads are placed straight into their destination. UCX 1.13 moves iov rendezvous over
  // shared memory in small active-message fragments (measured 10x slower than a contiguous
  // buffer), so there the pipeline keeps its contiguous encode/receive buffers.
  std::string zero_copy_lanes = "tcp";
  // How long the progress thread keeps polling after the last event before it sleeps on the
  // worker's event fd.
  absl::Duration busy_poll = absl::Microseconds(50);
  // Further UCX configuration (name without the UCX_ prefix, value), applied in order.
  std::vector<std::pair<std::string, std::string>> config;
};

absl::StatusOr<std::unique_ptr<Transport>> CreateUcxTransport(const UcxTransportOptions& options);

}  // namespace kvs::transfer
