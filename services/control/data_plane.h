// services/control/data_plane.h — builds the daemons' data-plane transports from configuration.
//
// TCP is always available. UCX is linked in when the build has the UCX transport
// (services/transfer/ucx/, KVS_WITH_UCX); otherwise asking for it is UNIMPLEMENTED, loudly, never
// a silent fallback to TCP.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/transfer/transport.h"

namespace kvs::control {

struct DataPlaneOptions {
  std::string bind_host = "127.0.0.1";  // listeners bind here
  std::string advertise_host;           // host peers dial (empty = bind_host)
  int tcp_streams = 1;                  // parallel TCP connections per transfer (connecting side)
  int tcp_socket_buffer_bytes = 0;      // 0 = kernel auto-tuning
  int tcp_user_timeout_ms = 5000;       // TCP_USER_TIMEOUT: a silent peer fails the transfer after this
  std::string ucx_tls;                  // UCX_TLS-style list; empty = UCX's choice
  std::string ucx_net_devices;          // UCX_NET_DEVICES-style list; empty = all
  // Lanes every transfer must use ("tcp", "posix,sysv,cma", "self"); empty = any (still reported).
  std::string require_lane;
};

absl::StatusOr<std::unique_ptr<transfer::Transport>> CreateTcpDataPlane(const DataPlaneOptions& o);
absl::StatusOr<std::unique_ptr<transfer::Transport>> CreateUcxDataPlane(const DataPlaneOptions& o);
// Whether this build can create a UCX transport.
bool UcxDataPlaneAvailable();

}  // namespace kvs::control
