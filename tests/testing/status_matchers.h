// tests/testing/status_matchers.h — gtest matchers for absl::Status (abseil 20220623 has none).
//
//   EXPECT_THAT(s, kvs::testing::IsOk());
//   EXPECT_THAT(s, kvs::testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
#pragma once

#include <gmock/gmock.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status/status.h"

namespace kvs::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status: " << s.ToString();
  return s.ok();
}

MATCHER_P2(StatusIs, code, msg_matcher, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status: " << s.ToString();
  return s.code() == code &&
         ::testing::Matches(msg_matcher)(std::string(s.message()));
}

}  // namespace kvs::testing

#define KVS_ASSERT_OK(expr) ASSERT_THAT((expr), ::kvs::testing::IsOk())
#define KVS_EXPECT_OK(expr) EXPECT_THAT((expr), ::kvs::testing::IsOk())
// Assigns the value of a StatusOr or fails the test.
#define KVS_ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  KVS_ASSERT_OK_AND_ASSIGN_IMPL_(KVS_STATUS_CONCAT_(kvs_t_, __LINE__), lhs, rexpr)
#define KVS_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                   \
  ASSERT_THAT(tmp.status(), ::kvs::testing::IsOk());    \
  lhs = std::move(tmp).value()
