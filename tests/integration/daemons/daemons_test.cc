// kvs-prefill + kvs-decode as real processes: real gRPC, the real data plane (TCP, UCX; loopback
// and two network namespaces), the real model (stories260K). The client is the project's own
// gRPC client (control::GrpcPrefillClient) or kvs-loadgen.
#include <signal.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "kernels/codec.h"
#include "services/control/grpc_server.h"
#include "services/control/grpc_services.h"
#include "services/control/serving_model.h"
#include "services/metrics/metrics.h"
#include "services/runner/generate.h"
#include "tests/integration/daemons/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs::testing {
namespace {

using ::testing::HasSubstr;

const char kPrompt[] = "Once upon a time";

std::string ModelPath() { return TestDataDir() + "/models/stories260K.gguf"; }

std::string TempDir() { return ProcessTempDir("kvs_daemons_"); }

absl::Time Soon() { return absl::Now() + absl::Seconds(60); }

struct Output {
  absl::StatusOr<control::RequestStats> stats;
  std::vector<int32_t> tokens;
  std::string text;
};

Output Generate(control::PrefillApi& client, control::GenerateParams p,
                const std::function<void(const control::TokenPiece&)>& on_token = nullptr) {
  Output o;
  o.stats = client.Generate(p, [&](const control::TokenPiece& t) {
    o.tokens.push_back(t.token_id);
    o.text += t.text;
    if (on_token) on_token(t);
    return absl::OkStatus();
  }, Soon());
  return o;
}

control::GenerateParams Params(const std::string& prompt, int max_new, const std::string& codec = "identity") {
  control::GenerateParams p;
  p.prompt = prompt;
  p.max_new_tokens = max_new;
  p.codec = codec;
  return p;
}

// kvs-generate's continuation of `prompt` (its stdout is the prompt, the text, a newline).
std::string KvsGenerate(const std::string& prompt, int max_tokens) {
  ProcessResult r = RunProcess({KVS_GENERATE_BIN, "--model", ModelPath(), "--prompt", prompt, "--max-tokens",
                                std::to_string(max_tokens), "--threads", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string out = r.out;
  EXPECT_TRUE(absl::StartsWith(out, prompt)) << out;
  out = out.substr(prompt.size());
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// A kvs-decode + kvs-prefill pair on loopback (or given addresses).
struct Pair {
  std::unique_ptr<DaemonProcess> decode, prefill;
  std::unique_ptr<control::GrpcPrefillClient> client;

  static absl::StatusOr<Pair> Start(const std::string& tag, std::vector<std::string> decode_extra = {},
                                    std::vector<std::string> prefill_extra = {},
                                    std::vector<std::string> decode_prefix = {},
                                    const std::string& decode_listen = "127.0.0.1:0") {
    Pair p;
    std::vector<std::string> d = decode_prefix;
    for (const std::string& a : {std::string(KVS_DECODE_BIN), std::string("--listen"), decode_listen,
                                 std::string("--model"), ModelPath(), std::string("--metrics-port"), std::string("0"),
                                 std::string("--threads"), std::string("1"), std::string("--log-level"),
                                 std::string("debug")}) {
      d.push_back(a);
    }
    d.insert(d.end(), decode_extra.begin(), decode_extra.end());
    KVS_ASSIGN_OR_RETURN(p.decode, DaemonProcess::Start(d, absl::StrCat(TempDir(), "/", tag, "-decode.log")));
    std::vector<std::string> f = {KVS_PREFILL_BIN, "--listen", "127.0.0.1:0", "--decode", p.decode->grpc(),
                                  "--model", ModelPath(), "--metrics-port", "0", "--threads", "1",
                                  "--log-level", "debug"};
    f.insert(f.end(), prefill_extra.begin(), prefill_extra.end());
    KVS_ASSIGN_OR_RETURN(p.prefill, DaemonProcess::Start(f, absl::StrCat(TempDir(), "/", tag, "-prefill.log")));
    p.client = std::make_unique<control::GrpcPrefillClient>(control::MakeChannel(p.prefill->grpc()),
                                                            p.prefill->grpc());
    return p;
  }
  std::string Logs() const {
    return absl::StrCat("--- decode log:\n", decode ? decode->Log() : "", "\n--- prefill log:\n",
                        prefill ? prefill->Log() : "");
  }
};

class DaemonsTcp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Pair> p = Pair::Start("tcp");
    ASSERT_TRUE(p.ok()) << p.status();
    pair_ = new Pair(*std::move(p));
  }
  static void TearDownTestSuite() {
    delete pair_;
    pair_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << pair_->Logs();
  }
  static Pair* pair_;
};
Pair* DaemonsTcp::pair_ = nullptr;

TEST_F(DaemonsTcp, IdentityTokensEqualKvsGenerate) {
  for (const std::string& prompt : {std::string(kPrompt), std::string("Lily and Ben went to the park")}) {
    const std::string want = KvsGenerate(prompt, 48);
    Output o = Generate(*pair_->client, Params(prompt, 48));
    KVS_ASSERT_OK(o.stats.status());
    EXPECT_EQ(o.text, want) << prompt;
    EXPECT_EQ(o.stats->codec, "identity");
    EXPECT_THAT(o.stats->transport, HasSubstr("tcp"));
    EXPECT_GT(o.stats->handoff_ms, 0);
    EXPECT_GT(o.stats->ttft_ms, 0);
    EXPECT_EQ(o.stats->generated_tokens, static_cast<int64_t>(o.tokens.size()));
  }
}

TEST_F(DaemonsTcp, Uniform8AgreementIsReportedAndHigh) {
  Output ref = Generate(*pair_->client, Params(kPrompt, 48, "identity"));
  Output q = Generate(*pair_->client, Params(kPrompt, 48, "uniform_int8"));
  KVS_ASSERT_OK(ref.stats.status());
  KVS_ASSERT_OK(q.stats.status());
  size_t same = 0;
  for (size_t i = 0; i < std::min(ref.tokens.size(), q.tokens.size()); ++i) same += ref.tokens[i] == q.tokens[i];
  const double agreement = static_cast<double>(same) / static_cast<double>(std::max(ref.tokens.size(), q.tokens.size()));
  std::cout << "uniform_int8 token agreement with identity over the daemons: " << agreement << " (ratio "
            << q.stats->ratio << ")\n";
  RecordProperty("uniform_int8_token_agreement", std::to_string(agreement));
  EXPECT_GE(agreement, 0.75);
  EXPECT_GT(q.stats->ratio, 1.0);
  EXPECT_LT(q.stats->wire_bytes, ref.stats->wire_bytes);
}

TEST_F(DaemonsTcp, BadInputIsAClearErrorAndTheDaemonsStayUp) {
  struct Case {
    std::string name;
    control::GenerateParams p;
    absl::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases = {
      {"unknown codec", Params(kPrompt, 8, "zip9000"), absl::StatusCode::kInvalidArgument, "unknown codec"},
      {"empty prompt", Params("", 8), absl::StatusCode::kInvalidArgument, "prompt is empty"},
      {"oversized prompt", Params(std::string(2 << 20, 'a'), 8), absl::StatusCode::kInvalidArgument, ""},
      {"zero tokens", Params(kPrompt, 0), absl::StatusCode::kInvalidArgument, "max_new_tokens"},
      {"too many tokens", Params(kPrompt, 100000), absl::StatusCode::kInvalidArgument, "max_new_tokens"},
  };
  {
    control::GenerateParams p = Params(kPrompt, 8);
    p.prompt_token_ids = {1, 2, 3};
    cases.push_back({"prompt and ids", p, absl::StatusCode::kInvalidArgument, "not both"});
  }
  {
    control::GenerateParams p = Params(kPrompt, 8);
    p.sampling.top_p = 3;
    cases.push_back({"bad sampling", p, absl::StatusCode::kInvalidArgument, "top_p"});
  }
  {
    control::GenerateParams p = Params("", 8);
    p.prompt_token_ids = {1, 600000};
    cases.push_back({"bad token id", p, absl::StatusCode::kInvalidArgument, "vocabulary"});
  }
  for (const Case& c : cases) {
    Output o = Generate(*pair_->client, c.p);
    EXPECT_EQ(o.stats.status().code(), c.code) << c.name << ": " << o.stats.status();
    EXPECT_THAT(std::string(o.stats.status().message()), HasSubstr(c.message)) << c.name;
  }
  // Still serving, both of them.
  KVS_ASSERT_OK_AND_ASSIGN(bool healthy, pair_->client->Healthy(Soon()));
  EXPECT_TRUE(healthy);
  Output ok = Generate(*pair_->client, Params(kPrompt, 8));
  KVS_EXPECT_OK(ok.stats.status());
}

TEST_F(DaemonsTcp, InfoDescribesBothSides) {
  KVS_ASSERT_OK_AND_ASSIGN(control::ServerInfo i, pair_->client->Info(Soon()));
  EXPECT_EQ(i.role, "prefill");
  EXPECT_EQ(i.model_name, "stories260K");
  EXPECT_EQ(i.layers, 5);
  EXPECT_THAT(i.decode_peers, ::testing::ElementsAre(pair_->decode->grpc()));
  EXPECT_THAT(i.codecs, ::testing::Contains("auto"));
  control::GrpcDecodeClient decode(control::MakeChannel(pair_->decode->grpc()), pair_->decode->grpc());
  KVS_ASSERT_OK_AND_ASSIGN(control::ServerInfo d, decode.Info(Soon()));
  EXPECT_EQ(d.role, "decode");
  EXPECT_EQ(d.model_fingerprint, i.model_fingerprint);
}

TEST_F(DaemonsTcp, MetricsPassTheExpositionFormatCheck) {
  KVS_ASSERT_OK(Generate(*pair_->client, Params(kPrompt, 8, "uniform_int8")).stats.status());
  KVS_ASSERT_OK_AND_ASSIGN(std::string p, HttpGet(pair_->prefill->metrics(), "/metrics"));
  KVS_EXPECT_OK(metrics::CheckExpositionFormat(p));
  EXPECT_THAT(p, HasSubstr("kvs_prefill_requests_total{code=\"OK\",codec=\"uniform_int8\"}"));
  EXPECT_THAT(p, HasSubstr("kvs_prefill_handoff_seconds_bucket"));
  EXPECT_THAT(p, HasSubstr("kvs_prefill_transport_info{kind=\"tcp\""));
  KVS_ASSERT_OK_AND_ASSIGN(std::string d, HttpGet(pair_->decode->metrics(), "/metrics"));
  KVS_EXPECT_OK(metrics::CheckExpositionFormat(d));
  EXPECT_THAT(d, HasSubstr("kvs_decode_sessions_opened_total{codec=\"uniform_int8\"}"));
  EXPECT_THAT(d, HasSubstr("kvs_decode_decompress_seconds_bucket"));
}

TEST_F(DaemonsTcp, LoadgenComparesCodecsWithoutErrors) {
  const std::string json = TempDir() + "/loadgen.json";
  ProcessResult r = RunProcess({KVS_LOADGEN_BIN, "--target", pair_->prefill->grpc(), "--requests", "12",
                                "--concurrency", "4", "--codecs", "identity,uniform_int8,kivi_2bit",
                                "--check-against", "identity", "--max-new-tokens", "16", "--json", json,
                                "--progress=false"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("uniform_int8"));
  std::ifstream in(json);
  nlohmann::json j = nlohmann::json::parse(in);
  ASSERT_EQ(j["codecs"].size(), 3u);
  for (const auto& c : j["codecs"]) {
    EXPECT_EQ(c["requests"], 12) << c["codec"];
    EXPECT_EQ(c["errors"], 0) << c["codec"];
    EXPECT_GT(c["ratio"].get<double>(), 0.9);
  }
  EXPECT_EQ(j["codecs"][0]["codec"], "identity");
  EXPECT_EQ(j["codecs"][0]["token_agreement"].get<double>(), 1.0);
}

// topk_prune_50 through the daemons resumes on the masked KV: the tokens equal a local run of the
// runner on the same per-layer encode/decode with the evicted positions masked out of attention.
TEST_F(DaemonsTcp, PruningCodecTokensEqualALocalMaskedRun) {
  const std::string prompt = "Lily and Ben went to the park. They saw a big red ball and";
  const int kTokens = 32;
  KVS_ASSERT_OK_AND_ASSIGN(std::unique_ptr<control::ServingModel> m, control::ServingModel::Load(ModelPath(), 1));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, m->EncodePrompt(prompt, false));
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult pre, m->model().Prefill(ids));
  const KvGeometry g = pre.cache.geometry();
  std::vector<uint16_t> k, v, dk(static_cast<size_t>(g.elements()), 0), dv(dk);
  KVS_ASSERT_OK(pre.cache.ExportF16(&k, &v));
  const KvCacheView src{{k.data(), g}, {v.data(), g}};
  const MutableKvCacheView dst{{dk.data(), g}, {dv.data(), g}};
  const CodecRegistry registry = CodecRegistry::Builtin();
  KVS_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Codec> codec, registry.Create("topk_prune_50"));
  std::vector<uint8_t> keep;  // one layer per chunk, as kvs-prefill's default plan
  for (int64_t l = 0; l < g.layers; ++l) {
    KVS_ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> payload, EncodeToVector(*codec, src.Layers(l, l + 1), nullptr));
    std::vector<uint8_t> mask(static_cast<size_t>(g.tokens));
    KVS_ASSERT_OK(DecodeFromVector(*codec, payload, dst.Layers(l, l + 1), nullptr, absl::MakeSpan(mask)));
    keep.insert(keep.end(), mask.begin(), mask.end());
  }
  GenerateOptions go;
  go.max_tokens = kTokens;
  go.stop_tokens = m->tokenizer().stop_tokens();
  KVS_ASSERT_OK_AND_ASSIGN(KvCache masked, m->model().ImportF16(KvCacheView(dst), keep));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache zeroed, m->model().ImportF16(KvCacheView(dst)));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> want, kvs::Generate(m->model(), &masked, pre.last_logits, go));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> zero, kvs::Generate(m->model(), &zeroed, pre.last_logits, go));
  ASSERT_NE(want, zero);  // a prompt where masking and zero-filling part ways

  Output o = Generate(*pair_->client, Params(prompt, kTokens, "topk_prune_50"));
  KVS_ASSERT_OK(o.stats.status());
  EXPECT_EQ(o.tokens, want);
  EXPECT_EQ(o.stats->codec, "topk_prune_50");
  EXPECT_GT(o.stats->ratio, 1.5);
}

// The layer-pipelined handoff (default) and the handoff after the whole forward deliver the same
// KV: the same tokens for a lossless and a lossy codec.
TEST_F(DaemonsTcp, LayerPipeliningOnAndOffGiveTheSameTokens) {
  KVS_ASSERT_OK_AND_ASSIGN(Pair off, Pair::Start("layer-off", {}, {"--layer-pipelined=false"}));
  ProcessResult dump = RunProcess({KVS_PREFILL_BIN, "--layer-pipelined=false", "--dump-config"});
  EXPECT_THAT(dump.out, HasSubstr("layer_pipelined = false")) << dump.out << dump.err;
  for (const std::string codec : {"identity", "uniform_int8", "cascade_prune50_int4"}) {
    Output on = Generate(*pair_->client, Params(kPrompt, 40, codec));
    Output o = Generate(*off.client, Params(kPrompt, 40, codec));
    KVS_ASSERT_OK(on.stats.status()) << codec;
    KVS_ASSERT_OK(o.stats.status()) << codec << off.Logs();
    EXPECT_EQ(on.tokens, o.tokens) << codec;
    EXPECT_EQ(on.stats->wire_bytes, o.stats->wire_bytes) << codec;
  }
}

// ---- failure and lifecycle (each with its own pair) ---------------------------------------------

TEST(Daemons, FingerprintMismatchIsFailedPrecondition) {
  // The same weights plus trailing bytes: a different file, so a different model fingerprint.
  const std::string other = TempDir() + "/other.gguf";
  std::filesystem::copy_file(ModelPath(), other, std::filesystem::copy_options::overwrite_existing);
  std::ofstream(other, std::ios::app) << "kvshuttle-fingerprint-test";
  KVS_ASSERT_OK_AND_ASSIGN(auto decode, DaemonProcess::Start({KVS_DECODE_BIN, "--listen", "127.0.0.1:0", "--model",
                                                              other, "--threads", "1"},
                                                             TempDir() + "/fp-decode.log"));
  KVS_ASSERT_OK_AND_ASSIGN(auto prefill, DaemonProcess::Start({KVS_PREFILL_BIN, "--listen", "127.0.0.1:0", "--decode",
                                                               decode->grpc(), "--model", ModelPath(), "--threads", "1"},
                                                              TempDir() + "/fp-prefill.log"));
  control::GrpcPrefillClient client(control::MakeChannel(prefill->grpc()), prefill->grpc());
  Output o = Generate(client, Params(kPrompt, 8));
  EXPECT_EQ(o.stats.status().code(), absl::StatusCode::kFailedPrecondition) << o.stats.status();
  EXPECT_THAT(std::string(o.stats.status().message()), HasSubstr("fingerprint"));
  KVS_ASSERT_OK_AND_ASSIGN(bool healthy, client.Healthy(Soon()));
  EXPECT_TRUE(healthy);
}

TEST(Daemons, KilledDecodeIsUnavailableWithinTwoSecondsAndARestartServes) {
  KVS_ASSERT_OK_AND_ASSIGN(Pair pair, Pair::Start("kill"));
  const std::string decode_addr = pair.decode->grpc();
  std::chrono::steady_clock::time_point killed;
  bool did_kill = false;
  // Kill kvs-decode as the first token reaches the client: the KV handoff and the 1000-token
  // generation on the decode side are then still ahead.
  Output o = Generate(*pair.client, Params(kPrompt, 1000), [&](const control::TokenPiece& t) {
    if (t.index == 0 && !did_kill) {
      pair.decode->Signal(SIGKILL);
      killed = std::chrono::steady_clock::now();
      did_kill = true;
    }
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  ASSERT_TRUE(did_kill);
  EXPECT_EQ(o.stats.status().code(), absl::StatusCode::kUnavailable) << o.stats.status() << pair.Logs();
  EXPECT_THAT(std::string(o.stats.status().message()), HasSubstr(decode_addr));
  EXPECT_LT(seconds, 2.0);
  std::cout << "client saw UNAVAILABLE " << seconds * 1e3 << " ms after the kill: " << o.stats.status() << "\n";
  EXPECT_EQ(pair.decode->Wait(), 128 + SIGKILL);

  // A new kvs-decode on the same address serves the next request.
  KVS_ASSERT_OK_AND_ASSIGN(pair.decode,
                           DaemonProcess::Start({KVS_DECODE_BIN, "--listen", decode_addr, "--model", ModelPath(),
                                                 "--threads", "1"},
                                                TempDir() + "/kill-decode2.log"));
  Output again = Generate(*pair.client, Params(kPrompt, 16));
  KVS_EXPECT_OK(again.stats.status()) << pair.Logs();
  EXPECT_EQ(again.text, KvsGenerate(kPrompt, 16));
}

TEST(Daemons, SigtermDrainsTheRunningRequest) {
  KVS_ASSERT_OK_AND_ASSIGN(Pair pair, Pair::Start("drain"));
  bool sent = false;
  Output o = Generate(*pair.client, Params(kPrompt, 200), [&](const control::TokenPiece& t) {
    if (t.index == 0 && !sent) {
      pair.prefill->Signal(SIGTERM);
      pair.decode->Signal(SIGTERM);
      sent = true;
    }
  });
  KVS_EXPECT_OK(o.stats.status()) << pair.Logs();
  EXPECT_EQ(o.stats->generated_tokens, static_cast<int64_t>(o.tokens.size()));
  EXPECT_EQ(pair.prefill->Wait(), 0);
  EXPECT_EQ(pair.decode->Wait(), 0);
  EXPECT_THAT(pair.prefill->Log(), HasSubstr("draining"));
}

TEST(Daemons, UcxIdentityTokensEqualKvsGenerate) {
  // UCX on loopback only: with every device, its worker address also names interfaces that other
  // tests' network namespaces create and delete meanwhile (veth ends in this namespace), and an
  // endpoint to an address whose interface just vanished fails with "Destination is unreachable".
  absl::StatusOr<Pair> pair = Pair::Start("ucx", {"--transports", "ucx", "--ucx-net-devices", "lo"},
                                          {"--transport", "ucx", "--ucx-net-devices", "lo"});
  if (!pair.ok() && absl::StrContains(pair.status().message(), "no UCX transport")) {
    GTEST_SKIP() << "this build has no UCX transport";
  }
  KVS_ASSERT_OK(pair.status());
  const std::string want = KvsGenerate(kPrompt, 48);
  Output o = Generate(*pair->client, Params(kPrompt, 48));
  KVS_ASSERT_OK(o.stats.status()) << pair->Logs();
  EXPECT_EQ(o.text, want);
  EXPECT_THAT(o.stats->transport, HasSubstr("ucx"));
  std::cout << "ucx transport: " << o.stats->transport << "\n";
}

// ---- two hosts on one machine: kvs-decode in its own network namespace ------------------------

class NetnsPair : public ::testing::Test {
 protected:
  void SetUp() override {
    ns_ = absl::StrCat("kvsd", getpid() % 100000);
    veth_ = absl::StrCat("kv", getpid() % 100000);
    // A /24 of our own per process, so that concurrent runs (other build dirs) do not collide.
    const int pid = static_cast<int>(getpid());
    const std::string net = absl::StrCat("10.", 100 + pid % 100, ".", (pid / 100) % 250, ".");
    host_a_ = net + "1";
    host_b_ = net + "2";
    auto sh = [](const std::string& cmd) { return RunProcess({"/bin/sh", "-c", cmd}); };
    ProcessResult r = sh(absl::StrCat("ip netns add ", ns_));
    if (r.exit_code != 0) GTEST_SKIP() << "no network namespaces here (needs root): " << r.err;
    created_ = true;
    r = sh(absl::StrCat("ip link add ", veth_, "a type veth peer name ", veth_, "b && ip link set ", veth_,
                        "b netns ", ns_, " && ip addr add ", host_a_, "/24 dev ", veth_, "a && ip link set ", veth_,
                        "a up && ip netns exec ", ns_, " ip addr add ", host_b_, "/24 dev ", veth_, "b && ip netns exec ",
                        ns_, " ip link set ", veth_, "b up && ip netns exec ", ns_, " ip link set lo up"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  void TearDown() override {
    if (created_) {
      RunProcess({"/bin/sh", "-c", absl::StrCat("ip link del ", veth_, "a 2>/dev/null; ip netns del ", ns_)});
    }
  }
  std::vector<std::string> InNamespace() const { return {"/usr/sbin/ip", "netns", "exec", ns_}; }

  std::string ns_, veth_, host_a_, host_b_;
  bool created_ = false;
};

TEST_F(NetnsPair, TcpAcrossNamespacesEqualsKvsGenerate) {
  KVS_ASSERT_OK_AND_ASSIGN(Pair pair, Pair::Start("netns-tcp", {"--data-host", host_b_}, {"--data-host", host_a_},
                                                  InNamespace(), host_b_ + ":0"));
  const std::string want = KvsGenerate(kPrompt, 32);
  Output o = Generate(*pair.client, Params(kPrompt, 32));
  KVS_ASSERT_OK(o.stats.status()) << pair.Logs();
  EXPECT_EQ(o.text, want);
  EXPECT_THAT(o.stats->transport, HasSubstr(host_b_));
  Output q = Generate(*pair.client, Params(kPrompt, 32, "uniform_int8"));
  KVS_ASSERT_OK(q.stats.status());
}

TEST_F(NetnsPair, UcxOverTcpAcrossNamespacesEqualsKvsGenerate) {
  absl::StatusOr<Pair> pair =
      // Each side on its veth end only (other tests add and remove interfaces meanwhile).
      Pair::Start("netns-ucx",
                  {"--transports", "ucx", "--data-host", host_b_, "--ucx-tls", "tcp", "--require-lane", "tcp",
                   "--ucx-net-devices", veth_ + "b"},
                  {"--transport", "ucx", "--data-host", host_a_, "--ucx-tls", "tcp", "--require-lane", "tcp",
                   "--ucx-net-devices", veth_ + "a"},
                  InNamespace(), host_b_ + ":0");
  if (!pair.ok() && absl::StrContains(pair.status().message(), "no UCX transport")) {
    GTEST_SKIP() << "this build has no UCX transport";
  }
  KVS_ASSERT_OK(pair.status());
  const std::string want = KvsGenerate(kPrompt, 32);
  Output o = Generate(*pair->client, Params(kPrompt, 32));
  KVS_ASSERT_OK(o.stats.status()) << pair->Logs();
  EXPECT_EQ(o.text, want);
  EXPECT_THAT(o.stats->transport, HasSubstr("tcp"));
  std::cout << "ucx across namespaces: " << o.stats->transport << "\n";
}

}  // namespace
}  // namespace kvs::testing
