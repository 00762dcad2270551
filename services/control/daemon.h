// services/control/daemon.h — process plumbing shared by the daemon mains (services/bin/): the
// termination signals and the ready file. Only main() calls these.
//
//   int main(...) {
//     kvs::control::BlockTerminationSignals();   // first: every thread inherits the mask
//     ... start servers ...
//     int sig = kvs::control::WaitForTerminationSignal();   // SIGTERM or SIGINT
//     ... drain ...
//   }
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace kvs::control {

// Blocks SIGTERM, SIGINT and SIGPIPE in the calling thread (and the threads it creates later), so
// that WaitForTerminationSignal can take them synchronously.
void BlockTerminationSignals();
// Waits for SIGTERM or SIGINT; returns the signal number.
int WaitForTerminationSignal();

// Writes `key=value` lines to `path` atomically (temp file + rename): a reader sees all or nothing.
absl::Status WriteReadyFile(const std::string& path,
                            const std::vector<std::pair<std::string, std::string>>& entries);

// Polls `done` every 20 ms until it returns true or `timeout` passes; returns whether it did.
bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout);

}  // namespace kvs::control
