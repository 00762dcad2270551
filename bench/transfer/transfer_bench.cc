#include "bench/transfer/transfer_bench.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "common/cli/args.h"
#include "common/log/log.h"
#include "common/npy/npy.h"
#include "common/status/status.h"
#include "common/synth/synthetic_kv.h"
#include "common/tensor/presets.h"
#include "common/thread_pool/thread_pool.h"
#include "kernels/codec.h"
#include "services/transfer/crc32c.h"
#include "services/transfer/pipeline.h"
#include "services/transfer/tcp/tcp_transport.h"
#if KVS_BENCH_TRANSFER_HAS_UCX
#include "services/transfer/ucx/ucx_transport.h"
#endif

extern char** environ;

namespace kvs::bench {
namespace {

using transfer::ConnectionOptions;
using transfer::FrameGate;
using transfer::FrameHeader;
using transfer::Session;
using transfer::SessionParams;
using transfer::TransferStats;

struct Config {
  std::string role = "send";
  std::string model = "llama-3.1-8b";
  int64_t tokens = 2048;
  std::string geom;  // "L,H,S,D" overrides model/tokens
  std::string keys, values;
  std::string codecs = "identity,uniform_int8";
  std::string transports = "tcp";
  std::string modes = "pipelined,sequential";
  int64_t layers_per_chunk = 1;
  int64_t repeats = 3;
  int64_t warmup = 1;
  int64_t tcp_streams = 1;
  int64_t socket_buffer = 0;
  int64_t encode_buffers = 3;
  int64_t recv_buffers = 4;
  int64_t codec_threads = 1;
  std::string baseline = "auto";  // auto | none | <Gbit/s>
  double baseline_seconds = 3;
  int64_t baseline_port = 5201;
  std::string recv_prefix;           // command prefix for the receiver side ("ip netns exec kvsB")
  std::string recv_host = "127.0.0.1";
  std::string ucx_devices;           // sender UCX_NET_DEVICES ("" = lo on loopback, else all)
  std::string recv_ucx_devices;      // receiver UCX_NET_DEVICES
  bool verify = true;
  bool zero_copy = true;
  int64_t ucx_busy_poll_us = 50;
  std::string json;
  std::string log_level = "warn";
  bool quiet = false;  // no progress lines, no table (library callers)
  bool interleave = false;  // repeats round-robin over the codec × mode points
  // --role=recv only
  std::string transport;
};

// ---- subprocesses ------------------------------------------------------------------------------

// A child (via /bin/sh -c) with its stdin and stdout on pipes; killed and reaped on destruction.
class Child {
 public:
  absl::Status Start(const std::string& command) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);  // one group: kill it all at the end
    posix_spawnattr_setpgroup(&attr, 0);
    const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
    const int rc = posix_spawn(&pid_, "/bin/sh", &fa, &attr, const_cast<char**>(argv), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(in[0]);
    close(out[1]);
    to_ = in[1];
    from_ = out[0];
    if (rc != 0) return absl::InternalError(absl::StrCat("spawn '", command, "': ", strerror(rc)));
    return absl::OkStatus();
  }
  absl::Status WriteLine(const std::string& line) {
    const std::string l = line + "\n";
    if (write(to_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) {
      return absl::UnavailableError("child stdin closed");
    }
    return absl::OkStatus();
  }
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
      if (left.count() <= 0) return absl::DeadlineExceededError("child said nothing in time");
      pollfd p{from_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000))) <= 0) continue;
      char tmp[4096];
      const ssize_t n = read(from_, tmp, sizeof tmp);
      if (n <= 0) return absl::UnavailableError("child exited");
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  // Reads everything until EOF (for one-shot tools).
  std::string ReadAll(absl::Duration timeout) {
    std::string all = buf_;
    buf_.clear();
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{from_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char tmp[4096];
      const ssize_t n = read(from_, tmp, sizeof tmp);
      if (n <= 0) break;
      all.append(tmp, static_cast<size_t>(n));
    }
    return all;
  }
  int Wait() {
    if (pid_ <= 0) return -1;
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  void Kill() {
    if (pid_ > 0) {
      kill(-pid_, SIGKILL);
      Wait();
    }
  }
  ~Child() {
    Kill();
    if (to_ >= 0) close(to_);
    if (from_ >= 0) close(from_);
  }

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string buf_;
};

std::string SelfExe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "kvs-bench";
}

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

bool IsLoopback(const std::string& host) { return absl::StartsWith(host, "127.") || host == "localhost"; }

// ---- transports ---------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<transfer::Transport>> MakeTransport(const Config& c,
                                                                   const std::string& name,
                                                                   bool receiver) {
  if (name == "tcp") {
    transfer::TcpTransportOptions o;
    o.streams = static_cast<int>(c.tcp_streams);
    o.bind_host = c.recv_host;
    o.socket_buffer_bytes = static_cast<int>(c.socket_buffer);
    return transfer::CreateTcpTransport(o);
  }
#if KVS_BENCH_TRANSFER_HAS_UCX
  transfer::UcxTransportOptions o;
  o.busy_poll = absl::Microseconds(c.ucx_busy_poll_us);
  if (name == "ucx-tcp") {
    o.tls = "tcp";
    o.require_transport = "tcp";
    std::string dev = receiver ? c.recv_ucx_devices : c.ucx_devices;
    if (dev.empty() && IsLoopback(c.recv_host)) dev = "lo";
    o.net_devices = dev;
  } else if (name == "ucx-shm") {
    o.tls = "shm";
    o.require_transport = "posix,sysv,cma";
  } else {
    return absl::InvalidArgumentError("unknown transport " + name + " (tcp, ucx-tcp, ucx-shm)");
  }
  return transfer::CreateUcxTransport(o);
#else
  (void)receiver;
  return absl::UnimplementedError("transport " + name + ": built without UCX");
#endif
}

absl::StatusOr<KvGeometry> Geometry(const Config& c) {
  if (!c.geom.empty()) {
    std::vector<std::string> p = absl::StrSplit(c.geom, ',');
    KvGeometry g;
    if (p.size() != 4 || !absl::SimpleAtoi(p[0], &g.layers) || !absl::SimpleAtoi(p[1], &g.heads) ||
        !absl::SimpleAtoi(p[2], &g.tokens) || !absl::SimpleAtoi(p[3], &g.head_dim)) {
      return absl::InvalidArgumentError("--geom must be L,H,S,D");
    }
    KVS_RETURN_IF_ERROR(ValidateGeometry(g));
    return g;
  }
  return PresetGeometry(c.model, c.tokens);
}

absl::StatusOr<Session> MakeSession(const Config& c, const KvGeometry& g, const Codec& codec,
                                    uint64_t id, const transfer::SessionToken& token) {
  SessionParams p;
  p.session_id = id;
  p.token = token;
  p.request_id = id;
  p.geom = g;
  p.layers_per_chunk = c.layers_per_chunk;
  return transfer::NegotiateSession(p, codec);
}

uint32_t KvCrc(const KvCacheView& kv) {
  const size_t n = static_cast<size_t>(kv.geom().elements()) * 2;
  return transfer::Crc32cExtend(transfer::Crc32c(kv.k.data, n), kv.v.data, n);
}

std::unique_ptr<ThreadPool> MakePool(const Config& c) {
  return c.codec_threads > 1 ? std::make_unique<ThreadPool>(static_cast<int>(c.codec_threads)) : nullptr;
}

ConnectionOptions ReceiverConnOptions(const Config& c, FrameGate* gate, size_t max_payload, int chunks,
                                      bool sequential) {
  ConnectionOptions o;
  o.validator = [gate](const FrameHeader& h) { return gate->Check(h); };
  o.placer = [gate](const FrameHeader& h, transfer::PayloadPlacement* p) { return gate->Place(h, p); };
  o.recv_buffer_bytes = max_payload;
  o.recv_buffers = static_cast<int>(sequential ? std::max<int64_t>(c.recv_buffers, chunks) : c.recv_buffers);
  o.max_inflight_sends = 2;
  return o;
}

// ---- receiver process ---------------------------------------------------------------------------

int RecvMain(const Config& c) {
  auto fail = [](const absl::Status& s) {
    std::printf("error %s\n", s.ToString().c_str());
    std::fflush(stdout);
    return 1;
  };
  auto geom = Geometry(c);
  if (!geom.ok()) return fail(geom.status());
  CodecRegistry registry = CodecRegistry::Builtin();
  auto identity = registry.Create("identity");
  if (!identity.ok()) return fail(identity.status());
  auto biggest = MakeSession(c, *geom, **identity, 1, {});
  if (!biggest.ok()) return fail(biggest.status());
  auto transport = MakeTransport(c, c.transport, /*receiver=*/true);
  if (!transport.ok()) return fail(transport.status());
  auto listener = (*transport)->Listen();
  if (!listener.ok()) return fail(listener.status());
  std::printf("endpoint %s\n", (*listener)->endpoint().c_str());
  std::fflush(stdout);
  FrameGate gate;
  const bool sequential = absl::StrContains(c.modes, "sequential");
  auto conn = (*listener)->Accept(
      ReceiverConnOptions(c, &gate, biggest->max_payload_bytes(), static_cast<int>(biggest->chunks.size()),
                          sequential),
      absl::Seconds(60));
  if (!conn.ok()) return fail(conn.status());
  OwnedKv dest = OwnedKv::Zeros(*geom);  // allocated and touched once, reused by every run
  std::unique_ptr<ThreadPool> pool = MakePool(c);
  std::map<std::string, std::unique_ptr<Codec>> codecs;
  std::string line;
  char buf[512];
  while (std::fgets(buf, sizeof buf, stdin) != nullptr) {
    line = std::string(absl::StripTrailingAsciiWhitespace(buf));
    std::vector<std::string> w = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (w.empty()) continue;
    if (w[0] == "quit") break;
    if (w[0] != "run" || w.size() != 5) {
      std::printf("error bad command '%s'\n", line.c_str());
      std::fflush(stdout);
      continue;
    }
    uint64_t id = 0;
    absl::SimpleAtoi(w[1], &id);
    transfer::SessionToken token{};
    const std::string tb = absl::HexStringToBytes(w[2]);
    std::copy(tb.begin(), tb.end(), token.begin());
    auto& codec = codecs[w[3]];
    if (!codec) {
      auto made = registry.Create(w[3]);
      if (!made.ok()) return fail(made.status());
      codec = std::move(*made);
    }
    auto session = MakeSession(c, *geom, *codec, id, token);
    if (!session.ok()) return fail(session.status());
    gate.Register(std::make_shared<Session>(*session));
    transfer::ReceiverOptions ro;
    ro.pipelined = w[4] == "1";
    ro.zero_copy_identity = c.zero_copy;
    ro.codec_pool = pool.get();
    transfer::KvReceiver receiver(conn->get(), &gate, codec.get(), ro);
    std::printf("ready\n");
    std::fflush(stdout);
    auto stats = receiver.Receive(*session, dest.mutable_view());
    if (!stats.ok()) {
      std::printf("done ERR %s\n", stats.status().ToString().c_str());
    } else {
      std::printf("done OK %08x\n", KvCrc(dest.view()));
    }
    std::fflush(stdout);
    if (!stats.ok() && !(*conn)->status().ok()) return 1;
  }
  return 0;
}

// ---- baselines ------------------------------------------------------------------------------------

struct Baseline {
  double gbps = 0;
  std::string tool;
  std::string note;
};

absl::StatusOr<Baseline> MeasureIperf(const Config& c) {
  Child server;
  const int port = static_cast<int>(c.baseline_port);
  KVS_RETURN_IF_ERROR(server.Start(absl::StrCat(c.recv_prefix, " iperf3 -s -1 -p ", port, " -B ", c.recv_host,
                                                " >/dev/null 2>&1")));
  std::string out;
  for (int attempt = 0; attempt < 50; ++attempt) {
    Child client;
    KVS_RETURN_IF_ERROR(client.Start(absl::StrCat("iperf3 -c ", c.recv_host, " -p ", port, " -t ",
                                                  c.baseline_seconds, " -P ", c.tcp_streams, " -J 2>/dev/null")));
    out = client.ReadAll(absl::Seconds(c.baseline_seconds + 20));
    client.Kill();  // reaps it; one still running past its time (hung) must not block us
    if (absl::StrContains(out, "sum_received")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // server not listening yet
  }
  server.Kill();  // -1: it exits after the one test; not if the client never connected
  nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.contains("end")) return absl::UnavailableError("iperf3 gave no result");
  Baseline b;
  b.gbps = j["end"]["sum_received"]["bits_per_second"].get<double>() / 1e9;
  b.tool = absl::StrCat("iperf3 -P ", c.tcp_streams, " -t ", c.baseline_seconds);
  return b;
}

absl::StatusOr<Baseline> MeasurePerftest(const Config& c, const std::string& transport, size_t msg_bytes) {
  std::string tls = transport == "ucx-shm" ? "shm" : "tcp";
  std::string send_dev = c.ucx_devices, recv_dev = c.recv_ucx_devices;
  if (tls == "tcp" && IsLoopback(c.recv_host)) {
    if (send_dev.empty()) send_dev = "lo";
    if (recv_dev.empty()) recv_dev = "lo";
  }
  auto env = [&](const std::string& dev) {
    std::string e = absl::StrCat("env UCX_TLS=", tls);
    if (!dev.empty()) absl::StrAppend(&e, " UCX_NET_DEVICES=", dev);
    return e;
  };
  const int port = static_cast<int>(c.baseline_port) + 1;
  const int64_t iters = std::max<int64_t>(20, static_cast<int64_t>((1ull << 30) / std::max<size_t>(msg_bytes, 1)));
  Child server;
  KVS_RETURN_IF_ERROR(server.Start(absl::StrCat(c.recv_prefix, " ", env(recv_dev), " ucx_perftest -p ", port,
                                                " >/dev/null 2>&1")));
  std::string out;
  const std::string cmd = absl::StrCat(env(send_dev), " ucx_perftest ", c.recv_host, " -p ", port,
                                       " -t ucp_am_bw -s ", msg_bytes, " -n ", iters, " -w ", std::min<int64_t>(iters / 10, 50),
                                       " -f 2>&1");
  for (int attempt = 0; attempt < 50; ++attempt) {
    Child client;
    KVS_RETURN_IF_ERROR(client.Start(cmd));
    out = client.ReadAll(absl::Seconds(120));
    client.Kill();  // reaps it; one still running past its time (hung) must not block us
    if (!absl::StrContains(out, "Connection refused") && !absl::StrContains(out, "connect")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  server.Kill();  // it exits after one test; not if no client ever reached it
  // Last line: iterations, 50%ile, avg overhead, overall overhead, MB/s avg, MB/s overall, ...
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipWhitespace());
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    std::vector<std::string> f = absl::StrSplit(*it, ' ', absl::SkipWhitespace());
    double mbps = 0;
    int64_t n = 0;
    if (f.size() >= 8 && absl::SimpleAtoi(f[0], &n) && absl::SimpleAtod(f[5], &mbps)) {
      Baseline b;
      b.gbps = mbps * 1048576.0 * 8 / 1e9;  // ucx_perftest's MB is 2^20 bytes
      b.tool = absl::StrCat("ucx_perftest ucp_am_bw UCX_TLS=", tls, " -s ", msg_bytes, " -n ", iters);
      return b;
    }
  }
  return absl::UnavailableError("ucx_perftest gave no result: " + out.substr(0, 400));
}

// ---- sender / orchestrator --------------------------------------------------------------------

struct RunResult {
  std::string transport, codec;
  bool pipelined = true;
  TransferStats stats;  // the median repeat
  double handoff_min_ms = 0, handoff_max_ms = 0;
  std::vector<double> handoff_repeats_ms;  // every timed repeat, ascending
  int repeats = 0;
  bool verified = false;
  bool verify_checked = false;
  Baseline baseline;
};

absl::StatusOr<OwnedKv> LoadKv(const Config& c, KvGeometry* geom, std::string* source) {
  if (!c.keys.empty()) {
    KVS_ASSIGN_OR_RETURN(OwnedKv kv, ReadKvNpy(c.keys, c.values));
    *geom = kv.geom;
    *source = absl::StrCat("npy ", c.keys, " ", c.values);
    return kv;
  }
  *source = std::string(DescribeSynthetic(SynthKind::kRealistic));
  return MakeSyntheticKv(*geom, 1234);
}

// Expected destination CRC: each chunk encoded and decoded locally (streaming mode).
absl::StatusOr<uint32_t> ExpectedCrc(const Codec& codec, const Session& s, const KvCacheView& src,
                                     ThreadPool* pool) {
  if (codec.info().id == CodecId::kIdentity) return KvCrc(src);
  OwnedKv out = OwnedKv::Zeros(s.geom);
  for (const transfer::ChunkSpec& ch : s.chunks) {
    KVS_ASSIGN_OR_RETURN(std::vector<uint8_t> p, EncodeToVector(codec, src.Layers(ch.layer_begin, ch.layer_end), pool));
    KVS_RETURN_IF_ERROR(DecodeFromVector(codec, p, out.mutable_view().Layers(ch.layer_begin, ch.layer_end), pool));
  }
  return KvCrc(out.view());
}

std::string ChildCommand(const Config& c, const std::string& transport, const KvGeometry& g) {
  std::string cmd = absl::StrCat(c.recv_prefix, " ", Quote(SelfExe()), " transfer --role recv --transport ",
                                 transport, " --geom ", g.layers, ",", g.heads, ",", g.tokens, ",", g.head_dim,
                                 " --layers-per-chunk ", c.layers_per_chunk, " --recv-host ", c.recv_host,
                                 " --tcp-streams ", c.tcp_streams, " --socket-buffer ", c.socket_buffer,
                                 " --recv-buffers ", c.recv_buffers, " --codec-threads ", c.codec_threads,
                                 " --modes ", c.modes, " --log-level ", c.log_level,
                                 c.zero_copy ? "" : " --zero-copy=false", " --ucx-busy-poll-us ",
                                 c.ucx_busy_poll_us);
  if (!c.recv_ucx_devices.empty()) absl::StrAppend(&cmd, " --recv-ucx-devices ", c.recv_ucx_devices);
  return cmd;
}

double SlowestStage(const TransferStats& s) { return std::max({s.encode_ms, s.wire_ms, s.decode_ms}); }

void PrintTable(const std::vector<RunResult>& runs, std::ostream& os) {
  os << absl::StrFormat("%-8s %-14s %-10s %9s %6s %8s %8s %8s %8s %9s %8s %8s %9s %9s %6s %s\n", "transp",
                        "codec", "mode", "wire_MiB", "ratio", "enc_ms", "wire_ms", "dec_ms", "queue", "handoff",
                        "gbps", "base", "model_seq", "model_pip", "h/slow", "ok");
  for (const RunResult& r : runs) {
    const TransferStats& s = r.stats;
    const double slow = SlowestStage(s);
    os << absl::StrFormat("%-8s %-14s %-10s %9.1f %6.2f %8.1f %8.1f %8.1f %8.1f %9.1f %8.2f %8.2f %9.1f %9.1f %6.2f %s\n",
                          r.transport, r.codec, r.pipelined ? "pipelined" : "sequential",
                          s.bytes_wire / 1048576.0, s.ratio, s.encode_ms, s.wire_ms, s.decode_ms, s.queue_ms,
                          s.handoff_ms, s.goodput_gbps, r.baseline.gbps, s.analytic.sequential_ms,
                          s.analytic.pipelined_ms, slow > 0 ? s.handoff_ms / slow : 0,
                          !r.verify_checked ? "-" : (r.verified ? "yes" : "NO"));
  }
}

nlohmann::json RunJson(const RunResult& r) {
  const TransferStats& s = r.stats;
  nlohmann::json j;
  j["transport"] = r.transport;
  j["transport_detail"] = s.transport;
  j["lane"] = s.lane;
  j["codec"] = r.codec;
  j["pipelined"] = r.pipelined;
  j["chunks"] = s.chunks;
  j["bytes_raw"] = s.bytes_raw;
  j["bytes_wire"] = s.bytes_wire;
  j["ratio"] = s.ratio;
  j["encode_ms"] = s.encode_ms;
  j["queue_ms"] = s.queue_ms;
  j["wire_ms"] = s.wire_ms;
  j["decode_ms"] = s.decode_ms;
  j["handoff_ms"] = s.handoff_ms;
  j["handoff_min_ms"] = r.handoff_min_ms;
  j["handoff_max_ms"] = r.handoff_max_ms;
  j["repeats"] = r.repeats;
  j["handoff_repeats_ms"] = r.handoff_repeats_ms;
  j["baseline_detail"] = r.baseline.note;
  j["goodput_gbps"] = s.goodput_gbps;
  j["wire_gbps"] = s.wire_gbps;
  j["baseline_gbps"] = r.baseline.gbps;
  j["baseline_tool"] = r.baseline.tool;
  j["goodput_over_baseline"] = r.baseline.gbps > 0 ? s.goodput_gbps / r.baseline.gbps : 0;
  j["analytic_ms"] = r.pipelined ? s.analytic.pipelined_ms : s.analytic.sequential_ms;
  j["analytic_sequential_ms"] = s.analytic.sequential_ms;
  j["analytic_pipelined_ms"] = s.analytic.pipelined_ms;
  j["analytic_transfer_ms"] = s.analytic.transfer_ms;
  j["analytic_raw_ms"] = s.analytic.raw_ms;
  j["slowest_stage_ms"] = SlowestStage(s);
  j["handoff_over_slowest_stage"] = SlowestStage(s) > 0 ? s.handoff_ms / SlowestStage(s) : 0;
  if (r.verify_checked) j["verified"] = r.verified;
  nlohmann::json chunks = nlohmann::json::array();
  for (const transfer::ChunkTiming& t : s.chunk_timings) {
    chunks.push_back({{"chunk", t.chunk},
                      {"wire_bytes", t.wire_bytes},
                      {"encode_us", (t.encode_end_ns - t.encode_begin_ns) / 1e3},
                      {"queue_us", (t.wire_begin_ns - t.encode_end_ns) / 1e3},
                      {"wire_us", (t.recv_end_ns - t.wire_begin_ns) / 1e3},
                      {"decode_wait_us", (t.decode_begin_ns - t.recv_end_ns) / 1e3},
                      {"decode_us", (t.decode_end_ns - t.decode_begin_ns) / 1e3}});
  }
  j["chunk_timings"] = chunks;
  return j;
}

absl::Status RunTransport(const Config& c, const std::string& transport, const KvGeometry& g, const OwnedKv& kv,
                          const std::vector<std::string>& codecs, const std::vector<bool>& modes,
                          std::map<std::string, uint32_t>* expected_crc, const TransferHooks& hooks,
                          std::vector<RunResult>* out) {
  CodecRegistry registry = CodecRegistry::Builtin();
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<Codec> identity, registry.Create("identity"));
  KVS_ASSIGN_OR_RETURN(Session biggest, MakeSession(c, g, *identity, 1, {}));

  // The raw link first, in the same run.
  Baseline baseline;
  if (c.baseline == "auto") {
    absl::StatusOr<Baseline> b = transport == "tcp" ? MeasureIperf(c)
                                                    : MeasurePerftest(c, transport, biggest.chunks[0].max_payload_bytes);
    if (b.ok()) {
      baseline = *b;
    } else {
      KVS_LOG_WARN("baseline for {} failed: {}", transport, b.status().ToString());
    }
  } else if (c.baseline != "none") {
    if (!absl::SimpleAtod(c.baseline, &baseline.gbps)) return absl::InvalidArgumentError("--baseline");
    baseline.tool = "given";
  }
  if (!c.quiet) {
    std::cerr << absl::StrFormat("[%s] baseline %.3f Gbit/s (%s)\n", transport, baseline.gbps, baseline.tool);
  }

  Child child;
  KVS_RETURN_IF_ERROR(child.Start(ChildCommand(c, transport, g)));
  KVS_ASSIGN_OR_RETURN(std::string line, child.ReadLine(absl::Seconds(60)));
  if (!absl::StartsWith(line, "endpoint ")) return absl::UnavailableError("receiver: " + line);
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<transfer::Transport> t, MakeTransport(c, transport, false));
  FrameGate gate;
  ConnectionOptions co;
  co.validator = [&gate](const FrameHeader& h) { return gate.Check(h); };
  co.recv_buffer_bytes = biggest.max_control_payload_bytes();
  co.recv_buffers = 2;
  co.max_inflight_sends = static_cast<int>(std::max<int64_t>(2, c.encode_buffers));
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<transfer::Connection> conn,
                       t->Connect(line.substr(9), co, absl::Seconds(30)));
  if (!c.quiet) std::cerr << absl::StrFormat("[%s] connected: %s\n", transport, conn->info().detail);
  std::unique_ptr<ThreadPool> pool = MakePool(c);

  // One sender per codec × mode; with --interleave the repeats go round-robin over them, so every
  // point sees the same background load (a shared machine drifts over minutes).
  struct Point {
    std::string name;
    const Codec* codec = nullptr;
    bool pipelined = true;
    std::unique_ptr<transfer::KvSender> sender;
    std::vector<TransferStats> timed;
    RunResult r;
  };
  std::map<std::string, std::unique_ptr<Codec>> owned;
  std::vector<Point> points;
  for (const std::string& name : codecs) {
    auto& codec = owned[name];
    if (!codec) {
      KVS_ASSIGN_OR_RETURN(codec, registry.Create(name));
    }
    for (bool pipelined : modes) {
      transfer::SenderOptions so;
      so.pipelined = pipelined;
      so.encode_buffers = static_cast<int>(c.encode_buffers);
      so.zero_copy_identity = c.zero_copy;
      so.codec_pool = pool.get();
      Point p;
      p.name = name;
      p.codec = codec.get();
      p.pipelined = pipelined;
      p.sender = std::make_unique<transfer::KvSender>(conn.get(), &gate, codec.get(), so);
      p.r.transport = transport;
      p.r.codec = name;
      p.r.pipelined = pipelined;
      p.r.baseline = baseline;
      p.r.verified = true;
      points.push_back(std::move(p));
    }
  }
  auto run_once = [&](Point& p, int64_t i) -> absl::Status {
    const uint64_t id = transfer::RandomId();
    const transfer::SessionToken token = transfer::RandomSessionToken();
    KVS_ASSIGN_OR_RETURN(Session s, MakeSession(c, g, *p.codec, id, token));
    if (c.verify && !expected_crc->count(p.name)) {
      KVS_ASSIGN_OR_RETURN((*expected_crc)[p.name], ExpectedCrc(*p.codec, s, kv.view(), pool.get()));
    }
    KVS_RETURN_IF_ERROR(child.WriteLine(absl::StrCat(
        "run ", id, " ", absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(token.data()), 16)),
        " ", p.name, " ", p.pipelined ? 1 : 0)));
    KVS_ASSIGN_OR_RETURN(line, child.ReadLine(absl::Seconds(60)));
    if (line != "ready") return absl::UnavailableError("receiver: " + line);
    absl::StatusOr<TransferStats> st = p.sender->Send(s, kv.view());
    KVS_ASSIGN_OR_RETURN(line, child.ReadLine(absl::Seconds(120)));
    if (!st.ok()) return Annotate(st.status(), absl::StrCat(transport, " ", p.name, " (receiver: ", line, ")"));
    if (!absl::StartsWith(line, "done OK")) return absl::UnavailableError("receiver: " + line);
    if (c.verify) {
      p.r.verify_checked = true;
      uint32_t got = 0;
      absl::SimpleHexAtoi(line.substr(8), &got);
      if (got != (*expected_crc)[p.name]) p.r.verified = false;
    }
    if (i >= c.warmup) {
      transfer::PredictHandoff(baseline.gbps, &*st);
      p.timed.push_back(std::move(*st));
    }
    return absl::OkStatus();
  };
  auto finish = [&](Point& p) {
    RunResult& r = p.r;
    std::vector<TransferStats>& timed = p.timed;
    std::sort(timed.begin(), timed.end(),
              [](const TransferStats& a, const TransferStats& b) { return a.handoff_ms < b.handoff_ms; });
    r.stats = timed[timed.size() / 2];
    for (const TransferStats& t : timed) r.handoff_repeats_ms.push_back(t.handoff_ms);
    r.handoff_min_ms = timed.front().handoff_ms;
    r.handoff_max_ms = timed.back().handoff_ms;
    r.repeats = static_cast<int>(timed.size());
    if (!c.quiet) {
      std::cerr << absl::StrFormat("[%s] %s %s: handoff %.1f ms (%.2f Gbit/s), wire %.1f ms, enc %.1f, dec %.1f\n",
                                   transport, p.name, p.pipelined ? "pipelined" : "sequential", r.stats.handoff_ms,
                                   r.stats.goodput_gbps, r.stats.wire_ms, r.stats.encode_ms, r.stats.decode_ms);
    }
    if (hooks.on_run) hooks.on_run(RunJson(r));
    out->push_back(std::move(r));
  };
  if (c.interleave) {
    for (int64_t i = 0; i < c.warmup + c.repeats; ++i) {
      for (Point& p : points) KVS_RETURN_IF_ERROR(run_once(p, i));
    }
    for (Point& p : points) finish(p);
  } else {
    for (Point& p : points) {
      for (int64_t i = 0; i < c.warmup + c.repeats; ++i) KVS_RETURN_IF_ERROR(run_once(p, i));
      finish(p);
    }
  }
  points.clear();  // senders return their buffers before the connection goes
  (void)child.WriteLine("quit");
  conn.reset();
  child.Wait();
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> SendMain(const Config& c, const TransferHooks& hooks) {
  KVS_ASSIGN_OR_RETURN(KvGeometry g, Geometry(c));
  std::string source;
  KVS_ASSIGN_OR_RETURN(OwnedKv kv, LoadKv(c, &g, &source));
  const std::vector<std::string> codecs = absl::StrSplit(c.codecs, ',', absl::SkipEmpty());
  const std::vector<std::string> transports = absl::StrSplit(c.transports, ',', absl::SkipEmpty());
  std::vector<bool> modes;
  for (absl::string_view m : absl::StrSplit(c.modes, ',', absl::SkipEmpty())) {
    if (m == "pipelined") {
      modes.push_back(true);
    } else if (m == "sequential") {
      modes.push_back(false);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--modes: unknown mode '", m, "'"));
    }
  }
  if (c.repeats < 1) return absl::InvalidArgumentError("--repeats must be >= 1");
  // iperf3 reads -t as whole seconds and takes 0 as "no time limit".
  if (c.baseline == "auto" && c.baseline_seconds < 1) {
    return absl::InvalidArgumentError("--baseline-seconds must be >= 1 (iperf3 -t is whole seconds)");
  }
  if (!c.quiet) {
    std::cerr << absl::StrFormat("kvs-bench transfer: %s %s, %.1f MiB of K+V, %s\n", c.model, g.ToString(),
                                 g.raw_bytes() / 1048576.0, source);
  }
  std::vector<RunResult> runs;
  std::map<std::string, uint32_t> expected;
  for (const std::string& t : transports) {
    KVS_RETURN_IF_ERROR(RunTransport(c, t, g, kv, codecs, modes, &expected, hooks, &runs));
  }
  if (!c.quiet) PrintTable(runs, std::cout);
  nlohmann::json j;
  j["tool"] = "kvs-bench transfer";
  j["model"] = c.geom.empty() && c.keys.empty() ? c.model : "custom";
  j["geometry"] = {{"layers", g.layers}, {"heads", g.heads}, {"tokens", g.tokens}, {"head_dim", g.head_dim}};
  j["input"] = source;
  j["layers_per_chunk"] = c.layers_per_chunk;
  j["tcp_streams"] = c.tcp_streams;
  j["encode_buffers"] = c.encode_buffers;
  j["recv_buffers"] = c.recv_buffers;
  j["codec_threads"] = c.codec_threads;
  j["recv_prefix"] = c.recv_prefix;
  j["recv_host"] = c.recv_host;
  j["hardware_threads"] = std::thread::hardware_concurrency();
  j["warmup"] = c.warmup;
  j["repeats"] = c.repeats;
  j["runs"] = nlohmann::json::array();
  for (const RunResult& r : runs) j["runs"].push_back(RunJson(r));
  if (!c.json.empty()) {
    if (c.json == "-") {
      std::cout << j.dump(2) << "\n";
    } else {
      std::ofstream f(c.json);
      if (!f) return absl::PermissionDeniedError("cannot write " + c.json);
      f << j.dump(2) << "\n";
    }
  }
  for (const RunResult& r : runs) {
    if (r.verify_checked && !r.verified) {
      return absl::DataLossError(absl::StrCat(r.transport, " ", r.codec, ": received KV differs from local decode"));
    }
  }
  return j;
}

void AddFlags(ArgParser* p, Config* c) {
  p->AddString("model", &c->model, "geometry preset (llama-3.1-8b, qwen2.5-7b, llama-3.1-70b, ...)");
  p->AddInt("tokens", &c->tokens, "tokens S");
  p->AddString("geom", &c->geom, "L,H,S,D (overrides --model/--tokens)");
  p->AddString("keys", &c->keys, "K as an fp16 [L,H,S,D] .npy (default: synthetic KV of realistic structure)");
  p->AddString("values", &c->values, "V as an fp16 [L,H,S,D] .npy");
  p->AddString("codecs", &c->codecs, "comma list of codecs");
  p->AddString("transports", &c->transports, "comma list: tcp, ucx-tcp, ucx-shm");
  p->AddString("modes", &c->modes, "comma list: pipelined, sequential");
  p->AddInt("layers-per-chunk", &c->layers_per_chunk, "layers per chunk (chunk size)");
  p->AddInt("repeats", &c->repeats, "timed transfers per codec and mode (the median is reported)");
  p->AddInt("warmup", &c->warmup, "untimed transfers first");
  p->AddInt("tcp-streams", &c->tcp_streams, "parallel TCP connections (also iperf3 -P)");
  p->AddInt("socket-buffer", &c->socket_buffer, "SO_SNDBUF/SO_RCVBUF bytes (0: kernel auto-tuning)");
  p->AddInt("encode-buffers", &c->encode_buffers, "sender encode buffers (pipelined)");
  p->AddInt("recv-buffers", &c->recv_buffers, "receiver buffers (pipelined)");
  p->AddInt("codec-threads", &c->codec_threads, "threads per encode/decode (1: the stage's own thread)");
  p->AddString("baseline", &c->baseline, "auto (iperf3 / ucx_perftest), none, or a link rate in Gbit/s");
  p->AddDouble("baseline-seconds", &c->baseline_seconds, "iperf3 duration");
  p->AddInt("baseline-port", &c->baseline_port, "iperf3 port (ucx_perftest uses the next one)");
  p->AddString("recv-prefix", &c->recv_prefix, "command prefix for the receiver side, e.g. 'ip netns exec kvsB'");
  p->AddString("recv-host", &c->recv_host, "address the receiver listens on");
  p->AddString("ucx-devices", &c->ucx_devices, "sender UCX_NET_DEVICES (default: lo on loopback)");
  p->AddString("recv-ucx-devices", &c->recv_ucx_devices, "receiver UCX_NET_DEVICES");
  p->AddBool("verify", &c->verify, "check the received KV against a local encode/decode");
  p->AddBool("zero-copy", &c->zero_copy, "identity: send from the KV and receive in place (both sides)");
  p->AddInt("ucx-busy-poll-us", &c->ucx_busy_poll_us, "UCX progress thread: polling time before it sleeps");
  p->AddString("json", &c->json, "write results JSON to this file ('-' for stdout)");
  p->AddString("log-level", &c->log_level, "error, warn, info, debug");
  p->AddString("role", &c->role, "internal: send (default) or recv");
  p->AddString("transport", &c->transport, "internal (--role recv): the transport to serve");
  p->AddBool("quiet", &c->quiet, "no progress lines and no table");
  p->AddBool("interleave", &c->interleave,
             "run the repeats round-robin over codecs and modes (fair comparison under drifting load)");
}

}  // namespace

absl::StatusOr<nlohmann::json> RunTransfer(const std::vector<std::string>& args, const TransferHooks& hooks) {
  Config c;
  c.quiet = true;
  ArgParser p("kvs-bench transfer", "");
  AddFlags(&p, &c);
  std::vector<char*> argv;
  std::string self = "kvs-bench transfer";
  argv.push_back(self.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  KVS_RETURN_IF_ERROR(p.Parse(static_cast<int>(copy.size() + 1), argv.data()));
  if (c.role != "send") return absl::InvalidArgumentError("RunTransfer: sender side only");
  return SendMain(c, hooks);
}

int RunTransferBench(int argc, char** argv) {
  Config c;
  ArgParser p("kvs-bench transfer",
              "Measured KV transfer (sender here, receiver in a second process) over TCP / UCX, "
              "beside the raw link (iperf3 / ucx_perftest) and the analytic model of CODECS.md §5.");
  AddFlags(&p, &c);
  if (std::optional<int> rc = p.ParseForMain(argc, argv)) return *rc;
  ConfigureLogging(c.log_level);
  if (c.role == "recv") return RecvMain(c);
  absl::StatusOr<nlohmann::json> j = SendMain(c, {});
  if (!j.ok()) {
    std::cerr << "kvs-bench transfer: " << j.status().ToString() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kvs::bench
