#include "tests/integration/daemons/daemon_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kvs::testing {
namespace {

std::vector<char*> Argv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const std::string& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Reads what is available on fd into *buf, waiting at most until `deadline`. false on EOF/timeout.
bool ReadSome(int fd, std::string* buf, absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  if (ms <= 0) return false;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(ms)) <= 0) return false;
  char tmp[4096];
  const ssize_t n = ::read(fd, tmp, sizeof tmp);
  if (n <= 0) return false;
  buf->append(tmp, static_cast<size_t>(n));
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(const std::vector<std::string>& argv,
                                                                   const std::string& log_path,
                                                                   absl::Duration ready_timeout) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log_path, ": ", std::strerror(errno)));
  std::vector<char*> args = Argv(argv);
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(out[1]);
  ::close(log_fd);
  std::unique_ptr<DaemonProcess> d(new DaemonProcess());
  d->pid_ = pid;
  d->stdout_fd_ = out[0];
  d->log_path_ = log_path;
  const absl::Time deadline = absl::Now() + ready_timeout;
  std::string text;
  while (true) {
    size_t pos = text.find(" ready grpc=");
    if (pos != std::string::npos && text.find('\n', pos) != std::string::npos) {
      std::string line = text.substr(pos + 1, text.find('\n', pos) - pos - 1);
      for (absl::string_view kv : absl::StrSplit(line, ' ')) {
        if (absl::ConsumePrefix(&kv, "grpc=")) d->grpc_ = std::string(kv);
        if (absl::ConsumePrefix(&kv, "metrics=")) d->metrics_ = std::string(kv);
      }
      return d;
    }
    if (!ReadSome(d->stdout_fd_, &text, deadline)) {
      d->Signal(SIGKILL);
      const int code = d->Wait();
      return absl::UnavailableError(absl::StrCat(argv[0], " did not become ready (exit ", code, "); log:\n", d->Log()));
    }
  }
}

DaemonProcess::~DaemonProcess() {
  if (!reaped_) {
    Signal(SIGKILL);
    Wait();
  }
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

void DaemonProcess::Signal(int sig) {
  if (!reaped_ && pid_ > 0) ::kill(pid_, sig);
}

int DaemonProcess::Wait() {
  if (reaped_) return exit_code_;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  exit_code_ = ExitCode(status);
  return exit_code_;
}

std::string DaemonProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ProcessResult RunProcess(const std::vector<std::string>& argv, absl::Duration timeout) {
  ProcessResult r;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return r;
  std::vector<char*> args = Argv(argv);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  const absl::Time deadline = absl::Now() + timeout;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    pollfd p[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0 || ::poll(p, 2, static_cast<int>(ms)) <= 0) {
      ::kill(pid, SIGKILL);
      break;
    }
    char tmp[4096];
    if (out_open && (p[0].revents & (POLLIN | POLLHUP))) {
      const ssize_t n = ::read(out[0], tmp, sizeof tmp);
      if (n <= 0) out_open = false; else r.out.append(tmp, static_cast<size_t>(n));
    }
    if (err_open && (p[1].revents & (POLLIN | POLLHUP))) {
      const ssize_t n = ::read(err[0], tmp, sizeof tmp);
      if (n <= 0) err_open = false; else r.err.append(tmp, static_cast<size_t>(n));
    }
  }
  ::close(out[0]);
  ::close(err[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = ExitCode(status);
  return r;
}

absl::StatusOr<std::string> HttpGet(const std::string& host_port, const std::string& path) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("host:port");
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host_port.substr(0, colon).c_str(), host_port.substr(colon + 1).c_str(), &hints, &res) != 0) {
    return absl::UnavailableError("resolve " + host_port);
  }
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect ", host_port, ": ", std::strerror(errno)));
  }
  const std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host_port, "\r\n\r\n");
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return absl::UnavailableError("send");
  }
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t body = resp.find("\r\n\r\n");
  if (!absl::StartsWith(resp, "HTTP/1.1 200") || body == std::string::npos) {
    return absl::UnavailableError("bad response: " + resp.substr(0, 64));
  }
  return resp.substr(body + 4);
}

std::string ProcessTempDir(const std::string& prefix) {
  const std::string d = absl::StrCat(::testing::TempDir(), "/", prefix, getpid());
  std::filesystem::create_directories(d);
  return d;
}

}  // namespace kvs::testing
