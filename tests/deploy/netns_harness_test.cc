// The two-host deployment on one machine, end to end, through the script users run:
// deploy/netns/kvs-netns-pair.sh builds namespaces A and B joined by a veth shaped with tc tbf to
// 1 Gbit/s, starts kvs-decode in B and kvs-prefill in A, runs kvs-loadgen (identity and
// uniform_int8, 25 requests each: 50 across the link), prints the summary and tears down. Asserted
// from kvs-loadgen's JSON: 0 errors, every request over TCP to B's address, the KV actually
// halved on the wire, and uniform_int8's median handoff below identity's (kvs-prefill with
// layer_pipelined = false, so that at 1 Gbit/s the handoff is the wire time of the whole KV:
// ~1.5 MB per request with SmolLM2-135M and 64 prompt tokens). Also:
// a run that fails (a daemon that cannot start) and a run interrupted by SIGTERM leave no namespace,
// veth or daemon behind.
//
// main() exits 77 (ctest: skipped) when network namespaces cannot be created (not root).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "tests/deploy/deploy_testing.h"
#include "tests/integration/daemons/daemon_process.h"

extern char** environ;

namespace kvs::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Harness() { return SourceDir() + "/deploy/netns/kvs-netns-pair.sh"; }

// A name and a /24 of this process's own, so that concurrent runs (other build dirs) do not collide.
struct Net {
  std::string name, subnet;
};
Net NetFor(int salt) {
  const int pid = static_cast<int>(getpid());
  return {absl::StrCat("kvh", pid % 100000, salt),
          absl::StrCat("10.", 150 + pid % 50, ".", (pid / 50 + salt) % 250)};
}

// True when nothing of run `name` is left: no namespace, no veth end, no daemon in its subnet.
void ExpectNothingLeft(const Net& net) {
  ProcessResult r = RunProcess({Which("ip"), "netns", "list"}, absl::Seconds(10));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr(net.name + "-a"))) << r.out;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr(net.name + "-b"))) << r.out;
  EXPECT_NE(RunProcess({Which("ip"), "link", "show", net.name + "a"}, absl::Seconds(10)).exit_code, 0);
  r = RunProcess({Which("pgrep"), "-f", "--", absl::StrCat("--data-host ", net.subnet, ".")}, absl::Seconds(10));
  EXPECT_NE(r.exit_code, 0) << "daemons still running: " << r.out;
}

std::string SmolLM2() {
  const char* env = std::getenv("KVS_MODELS_DIR");  // as scripts/fetch-models
  return std::string(env != nullptr ? env : KVS_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

TEST(NetnsHarness, FiftyRequestsAtOneGbitNoErrorsInt8HandsOffFasterThanIdentity) {
  // SmolLM2-135M (~23 KB of KV per token) makes the KV big enough for 1 Gbit/s to matter; without
  // it (scripts/fetch-models) the same run on stories260K with a long prompt (~310 KB of KV per
  // request), every assertion but the handoff comparison (see the end).
  const bool smol = fs::exists(SmolLM2());
  const std::string model = smol ? SmolLM2() : SourceDir() + "/tests/data/models/stories260K.gguf";
  const std::string prompt_tokens = smol ? "64" : "500";
  const Net net = NetFor(1);
  const std::string json = (fs::temp_directory_path() / absl::StrCat("kvs-netns-pair-", getpid(), ".json")).string();
  const absl::Time start = absl::Now();
  ProcessResult r = RunProcess({Harness(), "--bin-dir", BinDir(), "--model", model, "--rate", "1gbit", "--codecs",
                                "identity,uniform_int8", "--requests", "25", "--concurrency", "1", "--prompt-tokens",
                                prompt_tokens, "--max-new-tokens", "1", "--threads", "2", "--json", json, "--name",
                                net.name, "--subnet", net.subnet,
                                // The whole KV after the forward: the handoff is its full wire
                                // time (layer-pipelined, most of it overlaps the prefill and the
                                // handoff is only the last layer's tail).
                                "--prefill-arg", "--layer-pipelined=false"},
                               absl::Seconds(540));
  const double wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  std::cout << r.out << r.err.substr(r.err.size() > 6000 ? r.err.size() - 6000 : 0) << "\n";
  std::cout << "harness wall time " << wall_s << " s, model " << model << "\n";
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("kvs-netns-pair: ok"));
  // The summary table is what the harness prints; the link was tbf-shaped at 1 Gbit/s.
  EXPECT_THAT(r.out, HasSubstr("handoff ms"));
  EXPECT_THAT(r.err, HasSubstr("tbf"));
  EXPECT_THAT(r.err, HasSubstr("rate 1Gbit"));
  ExpectNothingLeft(net);

  std::ifstream in(json);
  ASSERT_TRUE(in.good()) << json;
  const nlohmann::json report = nlohmann::json::parse(in);
  fs::remove(json);
  ASSERT_EQ(report["codecs"].size(), 2u);
  const nlohmann::json& identity = report["codecs"][0];
  const nlohmann::json& int8 = report["codecs"][1];
  ASSERT_EQ(identity["codec"], "identity");
  ASSERT_EQ(int8["codec"], "uniform_int8");
  int64_t total = 0;
  for (const nlohmann::json* c : {&identity, &int8}) {
    EXPECT_EQ((*c)["requests"].get<int64_t>(), 25) << (*c)["codec"];
    EXPECT_EQ((*c)["errors"].get<int64_t>(), 0) << (*c)["codec"] << " " << (*c)["error_samples"];
    total += (*c)["requests"].get<int64_t>();
    // The KV went over TCP to host B's address, not loopback.
    EXPECT_THAT((*c)["transport"].get<std::string>(), HasSubstr(net.subnet + ".2")) << (*c)["codec"];
  }
  EXPECT_EQ(total, 50);
  const double id_wire = identity["wire_bytes_mean"], q_wire = int8["wire_bytes_mean"];
  const double id_handoff = identity["handoff_ms_p50"], q_handoff = int8["handoff_ms_p50"];
  std::cout << "handoff p50: identity " << id_handoff << " ms (" << id_wire / 1e6 << " MB on the wire), uniform_int8 "
            << q_handoff << " ms (" << q_wire / 1e6 << " MB)\n";
  EXPECT_LT(q_wire, 0.6 * id_wire);
  if (!smol) {
    // stories260K's KV (~310 KB) is about tbf's burst at 1 Gbit/s (256 KB): measured p50 handoffs
    // 1.96 vs 1.92 ms, equal within noise. The comparison needs SmolLM2's bigger KV.
    GTEST_SKIP() << "handoff comparison needs " << SmolLM2() << " (scripts/fetch-models); the run itself passed";
  }
  EXPECT_LT(q_handoff, id_handoff);
}

TEST(NetnsHarness, FailedRunLeavesNothingBehind) {
  // A model file that is not a GGUF: kvs-decode exits during start-up, inside namespace B.
  const fs::path bogus = fs::temp_directory_path() / absl::StrCat("kvs-not-a-model-", getpid(), ".gguf");
  std::ofstream(bogus) << "this is not a GGUF file\n";
  const Net net = NetFor(2);
  const fs::path logs = fs::temp_directory_path() / absl::StrCat("kvs-netns-pair-failed-", getpid());
  ProcessResult r = RunProcess({Harness(), "--bin-dir", BinDir(), "--model", bogus.string(), "--rate", "1gbit",
                                "--name", net.name, "--subnet", net.subnet, "--logs", logs.string()},
                               absl::Seconds(120));
  fs::remove(bogus);
  EXPECT_TRUE(fs::exists(logs / "decode.log"));  // kept for the user on failure
  fs::remove_all(logs);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("kvs-decode exited during start-up")) << r.err;
  EXPECT_THAT(r.err, HasSubstr("logs in"));
  ExpectNothingLeft(net);
}

TEST(NetnsHarness, DelayAndLossAreNetemOrAClearErrorNeverAnUnshapedLink) {
  const Net net = NetFor(4);
  const std::string netns = SourceDir() + "/deploy/netns/kvs-netns.sh";
  ProcessResult r = RunProcess({netns, "up", "--name", net.name, "--subnet", net.subnet, "--rate", "1gbit", "--delay",
                                "5ms", "--loss", "0.1%"},
                               absl::Seconds(60));
  if (r.exit_code == 0) {  // a kernel with sch_netem: tbf at the root, netem below it
    ProcessResult q = RunProcess({Which("ip"), "netns", "exec", net.name + "-a", Which("tc"), "qdisc", "show", "dev",
                                  net.name + "a"},
                                 absl::Seconds(10));
    EXPECT_THAT(q.out, HasSubstr("tbf"));
    EXPECT_THAT(q.out, HasSubstr("netem"));
    EXPECT_THAT(q.out, HasSubstr("delay 5ms"));
    RunProcess({netns, "down", "--name", net.name}, absl::Seconds(60));
  } else {  // none (this project's build machines): exit 2 naming netem, nothing left half-built
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("need tc netem"));
  }
  ExpectNothingLeft(net);
}

// Runs the harness with its output on a pipe; returns once a line containing `marker` was read
// (or the deadline passed / the output ended). Collects everything read into *out.
struct Child {
  pid_t pid = -1;
  int fd = -1;
};
Child Spawn(const std::vector<std::string>& argv) {
  int p[2];
  if (pipe(p) != 0) return {};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  posix_spawn_file_actions_addclose(&fa, p[0]);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(p[1]);
  if (rc != 0) {
    close(p[0]);
    return {};
  }
  return {pid, p[0]};
}
bool ReadUntil(int fd, const std::string& marker, absl::Time deadline, std::string* out) {
  char buf[4096];
  while (absl::Now() < deadline) {
    pollfd pfd{fd, POLLIN, 0};
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (poll(&pfd, 1, ms > 0 ? ms : 0) <= 0) continue;
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    out->append(buf, static_cast<size_t>(n));
    if (!marker.empty() && absl::StrContains(*out, marker)) return true;
  }
  return false;
}

TEST(NetnsHarness, DownStopsWhatStillRunsInsideTheNamespaces) {
  // An interrupted benchmark leaves a receiver or an iperf3 server in host B: `down` must not.
  const Net net = NetFor(5);
  const std::string netns = SourceDir() + "/deploy/netns/kvs-netns.sh";
  ASSERT_EQ(RunProcess({netns, "up", "--name", net.name, "--subnet", net.subnet}, absl::Seconds(30)).exit_code, 0);
  Child c = Spawn({Which("ip"), "netns", "exec", net.name + "-b", Which("sleep"), "1000"});
  ASSERT_GT(c.pid, 0);
  ProcessResult r = RunProcess({netns, "down", "--name", net.name}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // `down` waits for what it stopped, so the process has exited by now (bounded: never hang here).
  int status = 0;
  pid_t w = 0;
  for (int i = 0; i < 100 && (w = waitpid(c.pid, &status, WNOHANG)) == 0; ++i) absl::SleepFor(absl::Milliseconds(50));
  if (w == 0) {
    ::kill(c.pid, SIGKILL);
    waitpid(c.pid, &status, 0);
  }
  close(c.fd);
  EXPECT_EQ(w, c.pid) << "the process inside the namespace survived `down`";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;
  ExpectNothingLeft(net);
}

TEST(NetnsHarness, InterruptedRunLeavesNothingBehind) {
  const Net net = NetFor(3);
  const fs::path logs = fs::temp_directory_path() / absl::StrCat("kvs-netns-pair-interrupted-", getpid());
  Child c = Spawn({Harness(), "--bin-dir", BinDir(), "--model", SourceDir() + "/tests/data/models/stories260K.gguf",
                   "--rate", "1gbit", "--requests", "100000", "--name", net.name, "--subnet", net.subnet, "--logs",
                   logs.string()});
  ASSERT_GT(c.pid, 0);
  std::string out;
  // Interrupt while kvs-loadgen runs, both daemons up in their namespaces.
  const bool running = ReadUntil(c.fd, "kvs-netns-pair: kvs-loadgen:", absl::Now() + absl::Seconds(120), &out);
  if (running) {
    ::kill(c.pid, SIGTERM);
  } else {
    ::kill(c.pid, SIGKILL);
  }
  ReadUntil(c.fd, "", absl::Now() + absl::Seconds(60), &out);  // to EOF: the teardown's messages
  close(c.fd);
  int status = 0;
  waitpid(c.pid, &status, 0);
  fs::remove_all(logs);
  ASSERT_TRUE(running) << out;
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 143) << out;  // 128 + SIGTERM, after the teardown
  EXPECT_THAT(out, HasSubstr("kvs-decode stopped"));
  EXPECT_THAT(out, HasSubstr("kvs-prefill stopped"));
  ExpectNothingLeft(net);
}

}  // namespace
}  // namespace kvs::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (::testing::GTEST_FLAG(list_tests)) return RUN_ALL_TESTS();
  // Namespaces need root (CAP_SYS_ADMIN): without them there is no second host to test.
  const std::string probe = kvs::testing::NetFor(0).name + "p";
  kvs::testing::ProcessResult r = kvs::testing::RunProcess({kvs::testing::Which("ip"), "netns", "add", probe}, absl::Seconds(10));
  if (r.exit_code != 0) {
    std::fprintf(stderr, "skipping: cannot create a network namespace here (needs root): %s\n", r.err.c_str());
    return 77;
  }
  kvs::testing::RunProcess({kvs::testing::Which("ip"), "netns", "del", probe}, absl::Seconds(10));
  return RUN_ALL_TESTS();
}
