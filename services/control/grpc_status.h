// services/control/grpc_status.h — the one place where absl::Status meets grpc::Status.
//
// kvshuttle uses absl::Status everywhere inside; gRPC handlers convert at the edge with
// ToGrpcStatus, and clients convert what a call returned with FromGrpcStatus. The two code
// spaces match numerically (absl/status/status.h documents it), so the mapping is one to one;
// messages pass through unchanged.
//
//   grpc::Status Generate(...) override { return ToGrpcStatus(service_.Generate(...)); }
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace kvs::control {

grpc::Status ToGrpcStatus(const absl::Status& s);
absl::Status FromGrpcStatus(const grpc::Status& s);

}  // namespace kvs::control
