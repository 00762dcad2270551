// TCP part of data_plane.h (always built).
#include "services/control/data_plane.h"

#include "services/transfer/tcp/tcp_transport.h"

namespace kvs::control {

absl::StatusOr<std::unique_ptr<transfer::Transport>> CreateTcpDataPlane(const DataPlaneOptions& o) {
  transfer::TcpTransportOptions t;
  t.streams = o.tcp_streams;
  t.bind_host = o.bind_host;
  t.advertise_host = o.advertise_host;
  t.socket_buffer_bytes = o.tcp_socket_buffer_bytes;
  t.user_timeout_ms = o.tcp_user_timeout_ms;
  return transfer::CreateTcpTransport(t);
}

}  // namespace kvs::control
