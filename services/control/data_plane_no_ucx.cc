// UCX part of data_plane.h for builds without the UCX transport.
#include "services/control/data_plane.h"

namespace kvs::control {

absl::StatusOr<std::unique_ptr<transfer::Transport>> CreateUcxDataPlane(const DataPlaneOptions&) {
  return absl::UnimplementedError(
      "this build has no UCX transport (configure with -DKVS_WITH_UCX=ON and UCX installed)");
}

bool UcxDataPlaneAvailable() { return false; }

}  // namespace kvs::control
