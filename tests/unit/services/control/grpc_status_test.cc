#include "services/control/grpc_status.h"

#include <gtest/gtest.h>

namespace kvs::control {
namespace {

TEST(GrpcStatus, MapsEveryCodeOneToOneBothWays) {
  for (int c = 0; c <= 16; ++c) {
    absl::Status a = c == 0 ? absl::OkStatus()
                            : absl::Status(static_cast<absl::StatusCode>(c), "why");
    grpc::Status g = ToGrpcStatus(a);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    if (c != 0) {
      EXPECT_EQ(g.error_message(), "why");
    }
    absl::Status back = FromGrpcStatus(g);
    EXPECT_EQ(back, a);
  }
}

TEST(GrpcStatus, NamedCodesKeepTheirMeaning) {
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("peer lost")).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::FailedPreconditionError("fingerprint")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "late")).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(GrpcStatus, OutOfRangeCodesBecomeUnknown) {
  grpc::Status odd(static_cast<grpc::StatusCode>(99), "odd");
  EXPECT_EQ(FromGrpcStatus(odd).code(), absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace kvs::control
