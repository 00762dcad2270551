// The peer process is killed (SIGKILL) mid-transfer: the surviving side reports UNAVAILABLE
// within 2 s (ARCHITECTURE.md §8) and returns every buffer. The peer is a real second process
// (kvs_transfer_peer), over every transport that crosses processes.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/synth/synthetic_kv.h"
#include "services/transfer/pipeline.h"
#include "tests/integration/peer_session.h"
#include "tests/integration/transport_matrix.h"
#include "tests/testing/status_matchers.h"

extern char** environ;

namespace kvs::transfer::testing {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;

// A child process with its stdout on a pipe; killed and reaped on destruction.
class Child {
 public:
  absl::Status Start(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    out_ = fds[0];
    if (rc != 0) return absl::InternalError(absl::StrCat("posix_spawn ", args[0], ": ", rc));
    return absl::OkStatus();
  }
  // The next stdout line (bounded wait, so a broken helper fails the test instead of hanging).
  absl::StatusOr<std::string> ReadLine(absl::Duration timeout) {
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    while (true) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return absl::DeadlineExceededError("helper said nothing");
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char tmp[256];
      const ssize_t n = read(out_, tmp, sizeof tmp);
      if (n <= 0) return absl::UnavailableError("helper exited");
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  void Stop() {
    if (pid_ > 0) kill(pid_, SIGSTOP);
  }
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int st;
      waitpid(pid_, &st, 0);
      pid_ = -1;
    }
  }
  ~Child() {
    Kill();
    if (out_ >= 0) close(out_);
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buf_;
};

class PeerDeathTest : public ::testing::TestWithParam<TransportCase> {
 protected:
  void SetUp() override {
    registry_ = CodecRegistry::Builtin();
    KVS_ASSERT_OK_AND_ASSIGN(codec_, registry_.Create("identity"));
    auto t = MakeTransport(GetParam());
    if (absl::IsUnimplemented(t.status())) GTEST_SKIP() << t.status();
    ASSERT_THAT(t, IsOk());
    transport_ = *t;
    session_id_ = RandomId();
    token_hex_ = TokenHex(RandomSessionToken());
    KVS_ASSERT_OK_AND_ASSIGN(session_, MakePeerSession(*codec_, session_id_, token_hex_, kLayers));
    gate_.Register(std::make_shared<Session>(session_));
    opts_.validator = [this](const FrameHeader& h) { return gate_.Check(h); };
    opts_.recv_buffer_bytes = session_.max_payload_bytes();
    opts_.recv_buffers = 2;
    opts_.max_inflight_sends = 2;
  }

  std::vector<std::string> HelperArgs(const std::string& role) {
    return {KVS_TRANSFER_PEER_PATH, "--case=" + CaseName(GetParam()), "--role=" + role,
            absl::StrCat("--session=", session_id_), "--token=" + token_hex_,
            absl::StrCat("--layers=", kLayers), "--stall-after=2"};
  }

  static constexpr int64_t kLayers = 16;
  CodecRegistry registry_;
  std::unique_ptr<Codec> codec_;
  std::shared_ptr<Transport> transport_;
  uint64_t session_id_ = 0;
  std::string token_hex_;
  Session session_;
  FrameGate gate_;
  ConnectionOptions opts_;
};

TEST_P(PeerDeathTest, ReceiverReportsUnavailableWhenTheSenderProcessIsKilled) {
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, transport_->Listen());
  Child child;
  std::vector<std::string> args = HelperArgs("send");
  args.push_back("--endpoint=" + listener->endpoint());
  ASSERT_THAT(child.Start(args), IsOk());
  KVS_ASSERT_OK_AND_ASSIGN(auto conn, listener->Accept(opts_, absl::Seconds(20)));
  OwnedKv dst = OwnedKv::Zeros(session_.geom);
  absl::StatusOr<TransferStats> result = absl::UnknownError("not run");
  std::chrono::steady_clock::time_point returned;
  KvReceiver receiver(conn.get(), &gate_, codec_.get(), {});
  std::thread rx([&] {
    result = receiver.Receive(session_, dst.mutable_view());
    returned = std::chrono::steady_clock::now();
  });
  KVS_ASSERT_OK_AND_ASSIGN(std::string line, child.ReadLine(absl::Seconds(30)));
  ASSERT_EQ(line, "stalled");
  // Mid-transfer: the first chunks have arrived, the rest never will.
  while (conn->counters().frames_received < 2) std::this_thread::yield();
  const auto killed = std::chrono::steady_clock::now();
  child.Kill();
  rx.join();
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_LT(returned - killed, std::chrono::seconds(2)) << result.status();
  EXPECT_EQ(conn->counters().recv_buffers_in_use, 0);
}

TEST_P(PeerDeathTest, SenderReportsUnavailableWhenTheReceiverProcessIsKilled) {
  Child child;
  ASSERT_THAT(child.Start(HelperArgs("recv")), IsOk());
  KVS_ASSERT_OK_AND_ASSIGN(std::string line, child.ReadLine(absl::Seconds(30)));
  ASSERT_TRUE(absl::StartsWith(line, "endpoint ")) << line;
  ConnectionOptions tx_opts = opts_;
  tx_opts.recv_buffer_bytes = session_.max_control_payload_bytes();
  KVS_ASSERT_OK_AND_ASSIGN(auto conn, transport_->Connect(line.substr(9), tx_opts, absl::Seconds(20)));
  OwnedKv src = MakeSyntheticKv(session_.geom, 2);
  absl::StatusOr<TransferStats> result = absl::UnknownError("not run");
  std::chrono::steady_clock::time_point returned;
  SenderOptions so;
  so.encode_buffers = 2;
  KvSender sender(conn.get(), &gate_, codec_.get(), so);
  std::thread tx([&] {
    result = sender.Send(session_, src.view());
    returned = std::chrono::steady_clock::now();
  });
  KVS_ASSERT_OK_AND_ASSIGN(line, child.ReadLine(absl::Seconds(30)));
  ASSERT_EQ(line, "stalled");
  const auto killed = std::chrono::steady_clock::now();
  child.Kill();
  tx.join();
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_LT(returned - killed, std::chrono::seconds(2)) << result.status();
  EXPECT_EQ(sender.buffers_in_use(), 0);
  EXPECT_EQ(conn->counters().recv_buffers_in_use, 0);
}

// A peer that hangs (SIGSTOP: alive, silent) on a transport without UCX peer-failure support is
// caught by the heartbeat (UcxShm only: over TCP the peer's kernel keeps the connection alive).
TEST_P(PeerDeathTest, ReceiverReportsUnavailableWhenTheSenderHangs) {
  if (GetParam() != TransportCase::kUcxShm) GTEST_SKIP() << "heartbeat transports only";
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, transport_->Listen());
  Child child;
  std::vector<std::string> args = HelperArgs("send");
  args.push_back("--endpoint=" + listener->endpoint());
  ASSERT_THAT(child.Start(args), IsOk());
  KVS_ASSERT_OK_AND_ASSIGN(auto conn, listener->Accept(opts_, absl::Seconds(20)));
  OwnedKv dst = OwnedKv::Zeros(session_.geom);
  absl::StatusOr<TransferStats> result = absl::UnknownError("not run");
  KvReceiver receiver(conn.get(), &gate_, codec_.get(), {});
  std::thread rx([&] { result = receiver.Receive(session_, dst.mutable_view()); });
  KVS_ASSERT_OK_AND_ASSIGN(std::string line, child.ReadLine(absl::Seconds(30)));
  ASSERT_EQ(line, "stalled");
  while (conn->counters().frames_received < 2) std::this_thread::yield();
  child.Stop();
  rx.join();
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr("heartbeat")));
  EXPECT_EQ(conn->counters().recv_buffers_in_use, 0);
  child.Kill();
}

INSTANTIATE_TEST_SUITE_P(CrossProcess, PeerDeathTest, ::testing::ValuesIn(CrossProcessTransportCases()),
                         [](const ::testing::TestParamInfo<TransportCase>& i) { return CaseName(i.param); });

}  // namespace
}  // namespace kvs::transfer::testing
