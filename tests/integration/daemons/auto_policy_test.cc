// The `auto` codec through the real daemons (kvs-prefill + kvs-decode as processes, real gRPC,
// the TCP data plane, stories260K): over a veth pair shaped to 1 Gbit/s with tc tbf, auto with a
// token-agreement floor of 0.95 learns the link from the transfers and resolves to a compressing
// codec that meets the floor; on the unshaped loopback it resolves to whatever the daemon's own
// measurements predict fastest (checked against the prediction it reports, not a name).
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/control/grpc_server.h"
#include "services/control/grpc_services.h"
#include "tests/integration/daemons/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

std::string ModelPath() { return TestDataDir() + "/models/stories260K.gguf"; }

std::string TempDir() { return ProcessTempDir("kvs_auto_"); }

// The quality file for stories260K in the `kvs-bench quality --json` schema. A test input, not a
// measurement: TA values chosen so that a 0.95 floor admits identity, uniform_int8 and fp8_e4m3
// (as SmolLM2's measured file does) and excludes the rest.
std::string WriteQualityFile() {
  const std::string path = TempDir() + "/stories260K-quality.json";
  std::ofstream(path) << R"({"model": {"path": "tests/data/models/stories260K.gguf"}, "codecs": [
    {"codec": "identity", "token_agreement": {"mean": 1.0, "ci95": [1.0, 1.0]}},
    {"codec": "uniform_int8", "token_agreement": {"mean": 0.97, "ci95": [0.96, 0.98]}},
    {"codec": "fp8_e4m3", "token_agreement": {"mean": 0.97, "ci95": [0.955, 0.98]}},
    {"codec": "mixed_k8v4", "token_agreement": {"mean": 0.86, "ci95": [0.84, 0.89]}},
    {"codec": "uniform_int4", "token_agreement": {"mean": 0.81, "ci95": [0.78, 0.84]}},
    {"codec": "kivi_2bit", "token_agreement": {"mean": 0.61, "ci95": [0.56, 0.66]}}]})";
  return path;
}

const std::vector<std::string> kCompressingAboveFloor = {"uniform_int8", "fp8_e4m3"};

struct Pair {
  std::unique_ptr<DaemonProcess> decode, prefill;
  std::unique_ptr<control::GrpcPrefillClient> client;
  std::string Logs() const {
    return absl::StrCat("--- decode log:\n", decode ? decode->Log() : "", "\n--- prefill log:\n",
                        prefill ? prefill->Log() : "");
  }
};

// kvs-decode (optionally in a namespace, on `decode_host`) and kvs-prefill with the auto policy;
// the prior link rate is deliberately far too high, so only measurements can make auto compress.
absl::StatusOr<Pair> StartPair(const std::string& tag, const std::vector<std::string>& decode_prefix,
                               const std::string& decode_host, const std::string& prefill_host) {
  Pair p;
  std::vector<std::string> d = decode_prefix;
  for (const std::string& a : {std::string(KVS_DECODE_BIN), std::string("--listen"), decode_host + ":0",
                               std::string("--data-host"), decode_host, std::string("--model"), ModelPath(),
                               std::string("--threads"), std::string("1"), std::string("--log-level"),
                               std::string("info")}) {
    d.push_back(a);
  }
  KVS_ASSIGN_OR_RETURN(p.decode, DaemonProcess::Start(d, absl::StrCat(TempDir(), "/", tag, "-decode.log")));
  KVS_ASSIGN_OR_RETURN(
      p.prefill,
      DaemonProcess::Start({KVS_PREFILL_BIN, "--listen", "127.0.0.1:0", "--decode", p.decode->grpc(), "--data-host",
                            prefill_host, "--model", ModelPath(), "--metrics-port", "0", "--threads", "1",
                            "--auto-quality-file", WriteQualityFile(), "--auto-initial-gbps", "10000",
                            "--layers-per-chunk", "5", "--log-level", "info"},
                           absl::StrCat(TempDir(), "/", tag, "-prefill.log")));
  p.client = std::make_unique<control::GrpcPrefillClient>(control::MakeChannel(p.prefill->grpc()),
                                                          p.prefill->grpc());
  return p;
}

// An auto request with a 0.95 TA floor and a 400-token prompt: 320 KiB of raw K+V, one chunk
// (layers_per_chunk 5), large enough for the shaped rate, not tbf's bucket, to set its wire time.
absl::StatusOr<control::RequestStats> GenerateAuto(control::PrefillApi& client) {
  control::GenerateParams p;
  for (int i = 0; i < 400; ++i) p.prompt_token_ids.push_back(1 + (i * 37) % 500);
  p.max_new_tokens = 2;
  p.codec = "auto";
  p.min_token_agreement = 0.95;
  return client.Generate(p, [](const control::TokenPiece&) { return absl::OkStatus(); },
                         absl::Now() + absl::Seconds(60));
}

struct Reported {
  std::vector<std::pair<std::string, double>> ranked;  // the reason's "predicted ... ms:" list
  double link_gbps = 0;
};

// Parses auto's reason: "auto: C; predicted pipelined handoff ms: A 1.234 < B 2.345; link X Gbit/s
// to ...".
Reported ParseReason(const std::string& reason) {
  Reported r;
  for (absl::string_view part : absl::StrSplit(reason, "; ")) {
    if (absl::StartsWith(part, "predicted ")) {
      absl::string_view list = part.substr(part.find("ms: ") + 4);
      for (absl::string_view item : absl::StrSplit(list, " < ")) {
        std::vector<std::string> kv = absl::StrSplit(item, ' ');
        double ms = -1;
        if (kv.size() == 2 && absl::SimpleAtod(kv[1], &ms)) r.ranked.emplace_back(kv[0], ms);
      }
    } else if (absl::ConsumePrefix(&part, "link ")) {
      std::vector<std::string> w = absl::StrSplit(part, ' ');
      if (!w.empty()) (void)absl::SimpleAtod(w[0], &r.link_gbps);
    }
  }
  return r;
}

// The choice is the reported fastest, and the list is in order.
void ExpectConsistent(const control::RequestStats& st) {
  const Reported r = ParseReason(st.codec_reason);
  ASSERT_FALSE(r.ranked.empty()) << st.codec_reason;
  EXPECT_EQ(st.codec, r.ranked.front().first) << st.codec_reason;
  for (size_t i = 1; i < r.ranked.size(); ++i) EXPECT_LE(r.ranked[i - 1].second, r.ranked[i].second) << st.codec_reason;
  for (const auto& [codec, ms] : r.ranked) {
    EXPECT_THAT(codec, AnyOf("identity", "lossless_lz4", "uniform_int8", "fp8_e4m3")) << "below the floor";
  }
}

TEST(AutoPolicy, LoopbackResolvesToTheCodecTheDaemonPredictsFastest) {
  KVS_ASSERT_OK_AND_ASSIGN(Pair pair, StartPair("loopback", {}, "127.0.0.1", "127.0.0.1"));
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<control::RequestStats> st = GenerateAuto(*pair.client);
    KVS_ASSERT_OK(st.status()) << pair.Logs();
    ExpectConsistent(*st);
    std::cout << "loopback: " << st->codec << " (" << st->codec_reason << ")\n";
  }
  KVS_ASSERT_OK_AND_ASSIGN(std::string m, HttpGet(pair.prefill->metrics(), "/metrics"));
  EXPECT_THAT(m, HasSubstr("kvs_prefill_auto_choice_total{codec=\""));
  EXPECT_THAT(m, HasSubstr("kvs_prefill_link_gbps{peer=\""));
}

class ShapedNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    ns_ = absl::StrCat("kvsauto", getpid() % 100000);
    veth_ = absl::StrCat("ka", getpid() % 100000);
    const int pid = static_cast<int>(getpid());
    const std::string net = absl::StrCat("10.", 100 + (pid + 50) % 100, ".", (pid / 100) % 250, ".");
    host_a_ = net + "1";
    host_b_ = net + "2";
    auto sh = [](const std::string& cmd) { return RunProcess({"/bin/sh", "-c", cmd}); };
    ProcessResult r = sh(absl::StrCat("ip netns add ", ns_));
    if (r.exit_code != 0) GTEST_SKIP() << "no network namespaces here (needs root): " << r.err;
    created_ = true;
    // Prefill -> decode (A's egress) shaped to 1 Gbit/s; a small bucket so that 64 KiB frames
    // see the rate, not the burst.
    r = sh(absl::StrCat("ip link add ", veth_, "a type veth peer name ", veth_, "b && ip link set ", veth_, "b netns ",
                        ns_, " && ip addr add ", host_a_, "/24 dev ", veth_, "a && ip link set ", veth_,
                        "a up && ip netns exec ", ns_, " ip addr add ", host_b_, "/24 dev ", veth_,
                        "b && ip netns exec ", ns_, " ip link set ", veth_, "b up && ip netns exec ", ns_,
                        " ip link set lo up"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = sh(absl::StrCat("tc qdisc add dev ", veth_, "a root tbf rate 1gbit burst 16kb latency 50ms"));
    if (r.exit_code != 0) GTEST_SKIP() << "no tc tbf here: " << r.err;
  }
  void TearDown() override {
    if (created_) RunProcess({"/bin/sh", "-c", absl::StrCat("ip link del ", veth_, "a 2>/dev/null; ip netns del ", ns_)});
  }
  std::string ns_, veth_, host_a_, host_b_;
  bool created_ = false;
};

TEST_F(ShapedNetns, OneGbitLinkResolvesToACompressingCodecAboveTheFloor) {
  KVS_ASSERT_OK_AND_ASSIGN(Pair pair, StartPair("shaped", {"/usr/sbin/ip", "netns", "exec", ns_}, host_b_, host_a_));
  // Cold peer: the (far too high) prior predicts the cheapest encode fastest; every transfer, of
  // whatever codec, then feeds the measured goodput into the peer's EWMA.
  absl::StatusOr<control::RequestStats> st = GenerateAuto(*pair.client);
  KVS_ASSERT_OK(st.status()) << pair.Logs();
  EXPECT_THAT(st->codec_reason, HasSubstr("prior, none measured"));
  ExpectConsistent(*st);
  for (int i = 0; i < 3; ++i) {
    st = GenerateAuto(*pair.client);
    KVS_ASSERT_OK(st.status()) << pair.Logs();
    ExpectConsistent(*st);
    std::cout << "1 Gbit/s: " << st->codec << ", this transfer " << st->link_gbps << " Gbit/s (" << st->codec_reason
              << ")\n";
  }
  EXPECT_THAT(st->codec_reason, HasSubstr("EWMA of"));
  // The learnt link is of the order of the shaped rate (receiver-side timing; loose bounds).
  const Reported r = ParseReason(st->codec_reason);
  EXPECT_GT(r.link_gbps, 0.1) << st->codec_reason;
  EXPECT_LT(r.link_gbps, 5) << st->codec_reason;
  EXPECT_THAT(kCompressingAboveFloor, ::testing::Contains(st->codec)) << st->codec_reason;
  EXPECT_GT(st->ratio, 1.5);
  KVS_ASSERT_OK_AND_ASSIGN(std::string m, HttpGet(pair.prefill->metrics(), "/metrics"));
  EXPECT_THAT(m, HasSubstr(absl::StrCat("kvs_prefill_auto_choice_total{codec=\"", st->codec, "\"}")));
}

}  // namespace
}  // namespace kvs::testing
