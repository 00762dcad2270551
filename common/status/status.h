// common/status/status.h — the one error vocabulary of kvshuttle: absl::Status inside.
//
//   absl::StatusOr<int> Parse(absl::string_view s);
//   absl::Status Use() {
//     KVS_ASSIGN_OR_RETURN(int n, Parse("4"));
//     KVS_RETURN_IF_ERROR(Check(n));
//     return absl::OkStatus();
//   }
//
// Debian 12's abseil (20220623) has no ABSL_RETURN_IF_ERROR / ABSL_ASSIGN_OR_RETURN; these are ours.
#pragma once

#include "absl/strings/string_view.h"
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define KVS_STATUS_CONCAT_INNER_(a, b) a##b
#define KVS_STATUS_CONCAT_(a, b) KVS_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define KVS_RETURN_IF_ERROR(expr)                                 \
  do {                                                            \
    ::absl::Status kvs_status_ = (expr);                          \
    if (!kvs_status_.ok()) return kvs_status_;                    \
  } while (false)

// `KVS_ASSIGN_OR_RETURN(T x, StatusOrExpr)` declares and assigns, or returns the error.
#define KVS_ASSIGN_OR_RETURN(lhs, rexpr) \
  KVS_ASSIGN_OR_RETURN_IMPL_(KVS_STATUS_CONCAT_(kvs_statusor_, __LINE__), lhs, rexpr)

#define KVS_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace kvs {

// Prefixes a non-OK status message with context; OK passes through.
inline absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace kvs
