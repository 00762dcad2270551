// tests/integration/daemons/daemon_process.h — runs kvshuttle's daemons and tools as child
// processes for the integration tests: start, wait for the "ready grpc=... metrics=..." line on
// stdout (a blocking read with a timeout, no sleeps), signal, reap. stderr goes to a log file
// that failing tests print.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvs::testing {

class DaemonProcess {
 public:
  // Runs `argv` (argv[0] is the binary path) and waits for its ready line.
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(const std::vector<std::string>& argv,
                                                              const std::string& log_path,
                                                              absl::Duration ready_timeout = absl::Seconds(60));
  ~DaemonProcess();  // SIGKILL + reap when still running

  const std::string& grpc() const { return grpc_; }
  const std::string& metrics() const { return metrics_; }
  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Reaps the process; returns its exit code (128 + signal when killed).
  int Wait();
  std::string Log() const;

 private:
  DaemonProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  bool reaped_ = false;
  int exit_code_ = -1;
  std::string grpc_, metrics_, log_path_;
};

struct ProcessResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs a command to completion (timeout: SIGKILL) and captures its output.
ProcessResult RunProcess(const std::vector<std::string>& argv, absl::Duration timeout = absl::Seconds(120));

// <test temp dir>/<prefix><pid>, created: where a test binary's daemons write their logs and files
// (kept after the run for post-mortems).
std::string ProcessTempDir(const std::string& prefix);

// GET http://host:port/path (HTTP/1.0); the response body, or an error.
absl::StatusOr<std::string> HttpGet(const std::string& host_port, const std::string& path);

}  // namespace kvs::testing
