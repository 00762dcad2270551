// UCX part of data_plane.h (builds with the UCX transport).
#include "services/control/data_plane.h"

#include "services/transfer/ucx/ucx_transport.h"

namespace kvs::control {

absl::StatusOr<std::unique_ptr<transfer::Transport>> CreateUcxDataPlane(const DataPlaneOptions& o) {
  transfer::UcxTransportOptions u;
  u.tls = o.ucx_tls;
  u.net_devices = o.ucx_net_devices;
  u.require_transport = o.require_lane;
  return transfer::CreateUcxTransport(u);
}

bool UcxDataPlaneAvailable() { return true; }

}  // namespace kvs::control
