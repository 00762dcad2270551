// common/log/log.h — kvshuttle's logging macros over spdlog.
//
// Levels:
//   ERROR  an operation failed and the failure leaves this process (a request, a session, a transfer).
//   WARN   something degraded but work continues (fallback taken, retry, slow peer).
//   INFO   lifecycle events an operator wants by default (start, listen, peer connected, config).
//   DEBUG  per-request detail for diagnosis.
//   TRACE  per-chunk/per-frame detail; compiled out unless KVS_ENABLE_TRACE is defined.
// Message style: lowercase, "peer %s" rather than "peer=%s", errno text on syscall failures.
// Libraries only log; sinks and levels are configured once, in main() (ConfigureLogging).
#pragma once

#include "absl/strings/string_view.h"

#include "spdlog/spdlog.h"

#define KVS_LOG_ERROR(...) SPDLOG_ERROR(__VA_ARGS__)
#define KVS_LOG_WARN(...) SPDLOG_WARN(__VA_ARGS__)
#define KVS_LOG_INFO(...) SPDLOG_INFO(__VA_ARGS__)
#define KVS_LOG_DEBUG(...) SPDLOG_DEBUG(__VA_ARGS__)
#if defined(KVS_ENABLE_TRACE)
#define KVS_LOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#else
#define KVS_LOG_TRACE(...) (void)0
#endif

namespace kvs {

// Sets the process-wide level ("error", "warn", "info", "debug", "trace") and a compact pattern
// on stderr. Call from main() only. Returns false on an unknown level name.
bool ConfigureLogging(absl::string_view level);

}  // namespace kvs
