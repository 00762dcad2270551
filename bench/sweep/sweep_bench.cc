#include "bench/sweep/sweep_bench.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/sweep/sweep_analysis.h"
#include "bench/transfer/transfer_bench.h"
#include "common/cli/args.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "common/tensor/presets.h"

#ifndef KVS_SOURCE_DIR
#define KVS_SOURCE_DIR "."
#endif

namespace kvs::bench {
namespace {

constexpr char kRealModel[] = "smollm2-135m-real";

struct Config {
  std::string grid = "quick";
  std::string codecs, models, tokens, rates, modes;
  int64_t repeats = 0, warmup = -1;
  std::string transport = "tcp";
  std::string real_kv;  // directory with K.npy and V.npy (kvs-generate --dump-kv)
  std::string netns_script = std::string(KVS_SOURCE_DIR) + "/deploy/netns/kvs-netns.sh";
  std::string netns_name = "kvsw";
  std::string subnet = "10.232.0";
  double baseline_seconds = 2;
  int64_t baseline_port = 5311;
  int64_t layers_per_chunk = 1;
  bool chunk_timings = false;
  bool plan = false;
  std::string json = "sweep.json";
  std::string log_level = "warn";
};

struct Grid {
  std::vector<std::string> codecs, models, rates, modes;
  std::vector<int64_t> tokens;
  int64_t repeats = 3, warmup = 1;
};

// The two named grids. quick: what runs in a few minutes on 2 cores; paper: the KVShuttle grid
// (its 7 models, 14 codecs, 3 prompt lengths) on every rate.
Grid NamedGrid(const std::string& name) {
  Grid g;
  g.rates = {"1gbit", "5gbit", "10gbit", "25gbit", "veth", "loopback"};
  g.modes = {"pipelined", "sequential"};
  if (name == "paper") {
    g.codecs = {"identity",    "lossless_zstd", "lossless_lz4",  "fp8_e4m3",  "uniform_int8",
                "uniform_int4", "kivi_2bit",    "kvquant_2bit",  "cachegen",  "palu_lr",
                "topk_prune_50", "cascade_prune50_int4", "palu_int4", "mixed_k8v4"};
    g.models = {"qwen2.5-3b", "llama-3.2-3b", "phi-3.5-mini", "qwen2.5-7b",
                "llama-3.1-8b", "mistral-7b", "llama-3.1-70b", kRealModel};
    g.tokens = {512, 1024, 2048};
    g.repeats = 5;
  } else {
    g.codecs = {"identity", "uniform_int8", "fp8_e4m3", "uniform_int4", "kivi_2bit"};
    g.models = {"llama-3.1-8b", kRealModel};
    g.tokens = {1024};
    g.repeats = 5;
  }
  return g;
}

struct Rate {
  std::string label;     // as given: 10gbit, veth, loopback
  double nominal = 0;    // Gbit/s of the tbf shaping; 0 unshaped
  bool netns = true;
  // The rate axis for break-even: shaped rates by their tbf rate, then the unshaped veth pair,
  // then loopback.
  double order() const { return nominal > 0 ? nominal : (netns ? 1e6 : 2e6); }
};

absl::StatusOr<Rate> ParseRate(const std::string& s) {
  Rate r;
  r.label = s;
  if (s == "veth") return r;
  if (s == "loopback") {
    r.netns = false;
    return r;
  }
  double v = 0;
  if (absl::EndsWith(s, "gbit") && absl::SimpleAtod(s.substr(0, s.size() - 4), &v) && v > 0) {
    r.nominal = v;
    return r;
  }
  if (absl::EndsWith(s, "mbit") && absl::SimpleAtod(s.substr(0, s.size() - 4), &v) && v > 0) {
    r.nominal = v / 1000;
    return r;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--rates: '", s, "' is not <N>gbit, <N>mbit, veth (unshaped pair) or loopback"));
}

// ---- namespaces ---------------------------------------------------------------------------------

std::string ShQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Interrupted sweeps still take their namespaces down: SIGINT/SIGTERM exec the teardown command
// (execv is async-signal-safe), prepared before the handler is installed.
struct TeardownExec {
  std::string command;
  const char* argv[4] = {nullptr, nullptr, nullptr, nullptr};
};
TeardownExec* g_teardown = nullptr;  // set once in RunSweepBench; read only by the handler

extern "C" void OnSweepSignal(int) {
  if (g_teardown != nullptr) execv("/bin/sh", const_cast<char* const*>(g_teardown->argv));
  _exit(130);
}

absl::Status RunShell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  if (rc != 0) return absl::InternalError(absl::StrCat("'", cmd, "' failed (status ", rc, ")"));
  return absl::OkStatus();
}

// A veth pair (kvs-netns.sh up) for one rate, with this thread moved into namespace A; the
// destructor moves it back and tears the pair down.
class LinkScope {
 public:
  static absl::StatusOr<std::unique_ptr<LinkScope>> Create(const Config& c, const Rate& rate) {
    auto scope = std::unique_ptr<LinkScope>(new LinkScope(c));
    if (!rate.netns) return scope;
    std::string up = absl::StrCat(ShQuote(c.netns_script), " up --name ", ShQuote(c.netns_name), " --subnet ",
                                  ShQuote(c.subnet));
    if (rate.nominal > 0) absl::StrAppend(&up, " --rate ", rate.label);
    scope->up_ = true;  // from here on the destructor tears down, whatever happens
    KVS_RETURN_IF_ERROR(RunShell(up + " >/dev/null"));
    scope->home_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (scope->home_ < 0) return absl::InternalError("open /proc/thread-self/ns/net");
    const std::string a = absl::StrCat("/var/run/netns/", c.netns_name, "-a");
    const int fd = open(a.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::InternalError("open " + a);
    const int rc = setns(fd, CLONE_NEWNET);
    close(fd);
    if (rc != 0) return absl::InternalError(absl::StrCat("setns ", a, ": ", strerror(errno)));
    scope->entered_ = true;
    return scope;
  }
  std::string recv_prefix() const { return up_ ? absl::StrCat("ip netns exec ", c_.netns_name, "-b") : ""; }
  std::string recv_host() const { return up_ ? absl::StrCat(c_.subnet, ".2") : "127.0.0.1"; }
  ~LinkScope() {
    if (entered_ && setns(home_, CLONE_NEWNET) != 0) KVS_LOG_ERROR("setns back: {}", strerror(errno));
    if (home_ >= 0) close(home_);
    if (up_) {
      const absl::Status s = RunShell(absl::StrCat(ShQuote(c_.netns_script), " down --name ", ShQuote(c_.netns_name)));
      if (!s.ok()) KVS_LOG_ERROR("teardown: {}", s.ToString());
    }
  }

 private:
  explicit LinkScope(const Config& c) : c_(c) {}
  const Config& c_;
  bool up_ = false, entered_ = false;
  int home_ = -1;
};

// ---- machine ------------------------------------------------------------------------------------

std::string ReadFirstLine(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

nlohmann::json MachineJson() {
  nlohmann::json m;
  std::ifstream cpu("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpu, line)) {
    if (absl::StartsWith(line, "model name")) {
      m["cpu_model"] = std::string(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
      break;
    }
  }
  m["cores"] = std::thread::hardware_concurrency();
  utsname u{};
  if (uname(&u) == 0) {
    m["kernel"] = absl::StrCat(u.sysname, " ", u.release);
    m["hostname"] = u.nodename;
  }
  m["loadavg_start"] = ReadFirstLine("/proc/loadavg");
  return m;
}

std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// CPU accounting per rate: how much of the machine this sweep (with its receivers and iperf3, reaped
// children) used, and how much everything else did, over the same wall time.
struct CpuSample {
  double wall_s = 0, busy_s = 0, self_s = 0;
};

CpuSample SampleCpu() {
  CpuSample c;
  c.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  std::ifstream stat("/proc/stat");
  std::string cpu;
  uint64_t v[10] = {};
  stat >> cpu;
  for (uint64_t& x : v) stat >> x;
  // user nice system idle iowait irq softirq steal guest guest_nice; busy = all but idle, iowait
  // (guest time is already in user).
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  c.busy_s = static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage u{};
    getrusage(who, &u);
    c.self_s += u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
  }
  return c;
}

nlohmann::json CpuJson(const CpuSample& a, const CpuSample& b) {
  const double wall = b.wall_s - a.wall_s, busy = b.busy_s - a.busy_s, self = b.self_s - a.self_s;
  const double cores = std::thread::hardware_concurrency();
  return {{"wall_s", wall},
          {"machine_busy_cores", wall > 0 ? busy / wall : 0},
          {"sweep_cores", wall > 0 ? self / wall : 0},
          {"other_processes_cores", wall > 0 ? std::max(0.0, busy - self) / wall : 0},
          {"cores", cores},
          {"note", "time-averaged cores busy over the rate's wall time: /proc/stat (all CPUs, softirq included) "
                   "vs getrusage of this process and its reaped children (receivers, iperf3)"}};
}

// ---- progress ------------------------------------------------------------------------------------

class Progress {
 public:
  explicit Progress(int total) : total_(total), tty_(isatty(STDERR_FILENO) != 0) {}
  void Done(const std::string& what) {
    ++done_;
    const double el = Elapsed();
    const double eta = done_ > 0 ? el / done_ * (total_ - done_) : 0;
    const int width = 30;
    const int filled = total_ > 0 ? width * done_ / total_ : width;
    std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
    std::cerr << absl::StrFormat("%s[%s] %d/%d  %s  %s elapsed, ~%s left%s", tty_ ? "\r\033[K" : "", bar, done_,
                                 total_, what, Clock(el), Clock(eta), tty_ ? "" : "\n");
    if (tty_ && done_ == total_) std::cerr << "\n";
  }
  void Note(const std::string& s) { std::cerr << (tty_ ? "\r\033[K" : "") << s << "\n"; }
  double Elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  static std::string Clock(double s) {
    const int t = static_cast<int>(s + 0.5);
    return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  }

 private:
  int total_;
  int done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

double Num(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

// ---- the sweep ------------------------------------------------------------------------------------

std::vector<std::string> SplitList(const std::string& s) { return absl::StrSplit(s, ',', absl::SkipEmpty()); }

absl::Status ApplyOverrides(const Config& c, Grid* g) {
  if (c.grid != "quick" && c.grid != "paper") return absl::InvalidArgumentError("--grid must be quick or paper");
  if (!c.codecs.empty()) g->codecs = SplitList(c.codecs);
  if (!c.models.empty()) g->models = SplitList(c.models);
  if (!c.rates.empty()) g->rates = SplitList(c.rates);
  if (!c.modes.empty()) g->modes = SplitList(c.modes);
  if (!c.tokens.empty()) {
    g->tokens.clear();
    for (const std::string& t : SplitList(c.tokens)) {
      int64_t v = 0;
      if (!absl::SimpleAtoi(t, &v) || v < 1) return absl::InvalidArgumentError("--tokens: bad value '" + t + "'");
      g->tokens.push_back(v);
    }
  }
  if (c.repeats > 0) g->repeats = c.repeats;
  if (c.warmup >= 0) g->warmup = c.warmup;
  if (g->codecs.empty() || g->models.empty() || g->rates.empty() || g->modes.empty() || g->tokens.empty()) {
    return absl::InvalidArgumentError("empty codec, model, rate, mode or token list");
  }
  for (const std::string& m : g->modes) {
    if (m != "pipelined" && m != "sequential") return absl::InvalidArgumentError("--modes: pipelined, sequential");
  }
  for (const std::string& m : g->models) {
    if (m == kRealModel) continue;
    KVS_RETURN_IF_ERROR(PresetGeometry(m, 16).status());
  }
  for (const std::string& r : g->rates) KVS_RETURN_IF_ERROR(ParseRate(r).status());
  return absl::OkStatus();
}

struct Job {
  std::string model, input;
  int64_t tokens = 0;  // 0: from the .npy
  uint64_t raw_bytes = 0;
};

absl::StatusOr<uint64_t> NpyKvBytes(const std::string& dir) {
  // K and V fp16: the file sizes less their headers are close enough for a plan; the real geometry
  // comes from the transfer bench.
  uint64_t total = 0;
  for (const char* f : {"/K.npy", "/V.npy"}) {
    std::ifstream in(dir + f, std::ios::binary | std::ios::ate);
    if (!in) {
      return absl::NotFoundError(absl::StrCat(
          dir, f, " not found: dump real KV first, e.g. kvs-generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf "
                  "--prompt \"$(head -c 7000 tests/data/text/wikitext-2-raw-test-excerpt.txt)\" --max-tokens 1 "
                  "--dump-kv ",
          dir));
    }
    total += static_cast<uint64_t>(in.tellg());
  }
  return total;
}

absl::StatusOr<std::vector<Job>> Jobs(const Config& c, const Grid& g) {
  std::vector<Job> jobs;
  for (const std::string& m : g.models) {
    if (m == kRealModel) {
      if (c.real_kv.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("model ", kRealModel, " needs --real-kv DIR (K.npy, V.npy)"));
      }
      KVS_ASSIGN_OR_RETURN(uint64_t bytes, NpyKvBytes(c.real_kv));
      jobs.push_back({m, "real", 0, bytes});
      continue;
    }
    for (int64_t t : g.tokens) {
      KVS_ASSIGN_OR_RETURN(KvGeometry geom, PresetGeometry(m, t));
      jobs.push_back({m, "synthetic", t, static_cast<uint64_t>(geom.raw_bytes())});
    }
  }
  return jobs;
}

absl::Status Sweep(const Config& c, const std::vector<std::string>& argv_all) {
  Grid g = NamedGrid(c.grid);
  KVS_RETURN_IF_ERROR(ApplyOverrides(c, &g));
  KVS_ASSIGN_OR_RETURN(std::vector<Job> jobs, Jobs(c, g));
  std::vector<Rate> rates;
  for (const std::string& r : g.rates) rates.push_back(*ParseRate(r));
  const int per_job = static_cast<int>(g.codecs.size() * g.modes.size());
  const int total = static_cast<int>(rates.size() * jobs.size()) * per_job;

  // A lower bound of the time: every transfer moves its bytes at the nominal rate (unshaped: 10
  // Gbit/s assumed), raw bytes for identity, a 2:1 guess for the rest.
  double bound_s = 0;
  for (const Rate& r : rates) {
    const double gbps = r.nominal > 0 ? r.nominal : 10;
    for (const Job& j : jobs) {
      for (const std::string& codec : g.codecs) {
        const double bytes = codec == "identity" ? j.raw_bytes : j.raw_bytes / 2.0;
        bound_s += g.modes.size() * (g.warmup + g.repeats) * 8 * bytes / (gbps * 1e9);
      }
    }
    bound_s += c.baseline_seconds + 1;
  }
  std::cerr << absl::StrFormat(
      "kvs-bench sweep (%s grid): %d rates × %d inputs × %d codecs × %d modes = %d points, %d warm-up + %d timed "
      "transfers each; wire time alone ≥ %s\n",
      c.grid, rates.size(), jobs.size(), g.codecs.size(), g.modes.size(), total, g.warmup, g.repeats,
      Progress::Clock(bound_s));
  if (c.plan) {
    for (const Job& j : jobs) {
      std::cout << absl::StrFormat("  %-20s %-9s tokens %-6s %8.1f MiB\n", j.model, j.input,
                                   j.tokens > 0 ? absl::StrCat(j.tokens) : "npy", j.raw_bytes / 1048576.0);
    }
    std::cout << "  rates: " << absl::StrJoin(g.rates, ",") << "\n  codecs: " << absl::StrJoin(g.codecs, ",")
              << "\n  modes: " << absl::StrJoin(g.modes, ",") << "\n";
    return absl::OkStatus();
  }

  nlohmann::json doc;
  doc["tool"] = "kvs-bench sweep";
  doc["schema"] = 1;
  doc["command"] = absl::StrJoin(argv_all, " ");
  doc["started_utc"] = UtcNow();
  doc["machine"] = MachineJson();
  doc["grid"] = {{"name", c.grid}, {"codecs", g.codecs}, {"models", g.models}, {"tokens", g.tokens},
                 {"rates", g.rates}, {"modes", g.modes}, {"repeats", g.repeats}, {"warmup", g.warmup},
                 {"transport", c.transport}, {"layers_per_chunk", c.layers_per_chunk}};
  doc["method"] =
      "Per rate: a veth pair between two network namespaces (deploy/netns/kvs-netns.sh), shaped with tc tbf "
      "on both ends ('veth' = unshaped; 'loopback' = 127.0.0.1, no namespaces); the sender (this process) in "
      "namespace A, the receiver (kvs-bench transfer --role recv) in B. The link is measured first (iperf3, "
      "one TCP stream) and that rate is the point's link_gbps and the analytic models' rate. Per (input, codec, "
      "mode): warm-up transfers, then timed ones; handoff = sender start -> every chunk decoded at the "
      "receiver; the median repeat is reported with min/max/IQR; every received KV is checked against a "
      "local encode/decode (run.verified). Analytic: transfer = 8·wire bytes/link rate (the paper's formula); "
      "sequential = Σencode + transfer + Σdecode; pipelined = (c0+x0+d0) + (n−1)·max(mean c, mean x, mean "
      "d) with this run's measured per-chunk encode/decode times. Deviation = (measured − analytic)/analytic.";
  doc["points"] = nlohmann::json::array();

  Progress progress(total);
  for (const Rate& rate : rates) {
    KVS_ASSIGN_OR_RETURN(std::unique_ptr<LinkScope> link, LinkScope::Create(c, rate));
    const CpuSample cpu0 = SampleCpu();
    std::string baseline = "auto";
    for (const Job& job : jobs) {
      std::vector<std::string> args = {"--interleave", "--codecs", absl::StrJoin(g.codecs, ","), "--modes", absl::StrJoin(g.modes, ","),
                                       "--transports", c.transport, "--repeats", absl::StrCat(g.repeats),
                                       "--warmup", absl::StrCat(g.warmup), "--layers-per-chunk",
                                       absl::StrCat(c.layers_per_chunk), "--baseline", baseline,
                                       "--baseline-seconds", absl::StrCat(c.baseline_seconds), "--baseline-port",
                                       absl::StrCat(c.baseline_port), "--recv-host", link->recv_host(),
                                       "--log-level", c.log_level};
      if (!link->recv_prefix().empty()) {
        args.insert(args.end(), {"--recv-prefix", link->recv_prefix()});
      }
      if (job.input == "real") {
        args.insert(args.end(), {"--keys", c.real_kv + "/K.npy", "--values", c.real_kv + "/V.npy"});
      } else {
        args.insert(args.end(), {"--model", job.model, "--tokens", absl::StrCat(job.tokens)});
      }
      std::vector<nlohmann::json> runs;
      TransferHooks hooks;
      hooks.on_run = [&](const nlohmann::json& run) {
        runs.push_back(run);
        progress.Done(absl::StrFormat("%s %s S=%s %s %s", rate.label, job.model,
                                      job.tokens > 0 ? absl::StrCat(job.tokens) : "npy",
                                      run["codec"].get<std::string>(), run["pipelined"].get<bool>() ? "pipe" : "seq"));
      };
      absl::StatusOr<nlohmann::json> result = RunTransfer(args, hooks);
      if (!result.ok()) {
        return Annotate(result.status(), absl::StrCat("rate ", rate.label, ", ", job.model, " (", job.input, ")"));
      }
      if (baseline == "auto") {
        const double b = runs.empty() ? 0 : Num(runs.front(), "baseline_gbps");
        if (b > 0) {
          baseline = absl::StrFormat("%.6f", b);
          doc["links"][rate.label] = {{"nominal_gbps", rate.nominal}, {"measured_gbps", b},
                                      {"tool", runs.front()["baseline_tool"]}};
          progress.Note(absl::StrFormat("[%s] link measured: %.3f Gbit/s (iperf3)", rate.label, b));
        } else {
          progress.Note(absl::StrFormat("[%s] link measurement failed; analytic columns empty", rate.label));
        }
      }
      for (nlohmann::json& run : (*result)["runs"]) {
        doc["points"].push_back(PointRecord(std::move(run), {rate.label, rate.nominal, rate.order()}, job.model,
                                            job.input, (*result)["geometry"], c.chunk_timings));
      }
    }
    doc["cpu"][rate.label] = CpuJson(cpu0, SampleCpu());
    progress.Note(absl::StrFormat("[%s] cores busy: %.2f of %d (this sweep %.2f, other processes %.2f)", rate.label,
                                  doc["cpu"][rate.label]["machine_busy_cores"].get<double>(),
                                  std::thread::hardware_concurrency(),
                                  doc["cpu"][rate.label]["sweep_cores"].get<double>(),
                                  doc["cpu"][rate.label]["other_processes_cores"].get<double>()));
  }
  doc["finished_utc"] = UtcNow();
  doc["elapsed_s"] = progress.Elapsed();
  doc["machine"]["loadavg_end"] = ReadFirstLine("/proc/loadavg");
  doc["break_even"] = AnalysePoints(&doc["points"]);

  // Summary on stdout.
  std::cout << absl::StrFormat("\n%-14s %-20s %-6s %-10s %-9s %9s %10s %8s %9s %9s\n", "rate", "model", "S", "codec",
                               "mode", "link", "handoff", "x raw", "analytic", "dev");
  for (const auto& p : doc["points"]) {
    const auto& dev = p["deviation"]["handoff_vs_mode"];
    std::cout << absl::StrFormat("%-14s %-20s %-6d %-10s %-9s %9.2f %10.1f %8s %9.1f %9s\n",
                                 p["rate"].get<std::string>(), p["model"].get<std::string>(),
                                 p["tokens"].get<int64_t>(), p["codec"].get<std::string>().substr(0, 10),
                                 p["mode"].get<std::string>(), p["link_gbps"].get<double>(),
                                 p["handoff_ms"]["median"].get<double>(),
                                 p.contains("speedup_vs_identity") && p["speedup_vs_identity"].is_number()
                                     ? absl::StrFormat("%.2f", p["speedup_vs_identity"].get<double>())
                                     : "-",
                                 p["analytic"]["mode_ms"].get<double>(),
                                 dev.is_number() ? absl::StrFormat("%+.1f%%", 100 * dev.get<double>()) : "-");
  }
  std::cout << "\nbreak-even bandwidth (pipelined: raw identity vs the codec, measured):\n";
  for (const auto& b : doc["break_even"]) {
    if (b["mode"] != "pipelined") continue;
    std::cout << absl::StrFormat("  %-20s S=%-6d %-22s %s\n", b["model"].get<std::string>(),
                                 b["tokens"].get<int64_t>(), b["codec"].get<std::string>(), DescribeBreakEven(b));
  }
  std::cerr << absl::StrFormat("sweep took %s\n", Progress::Clock(progress.Elapsed()));
  if (c.json == "-") {
    std::cout << doc.dump(1) << "\n";
  } else if (!c.json.empty()) {
    std::ofstream f(c.json);
    if (!f) return absl::PermissionDeniedError("cannot write " + c.json);
    f << doc.dump(1) << "\n";
    f.flush();
    if (!f) return absl::DataLossError("writing " + c.json + " failed (disk full?)");
    std::cerr << "json written to " << c.json << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunSweepBench(int argc, char** argv) {
  Config c;
  ArgParser p("kvs-bench sweep",
              "The KVShuttle grid measured: codecs × models × prompt lengths × shaped link rates × "
              "sequential/pipelined, every point a real transfer between two network namespaces, with the "
              "analytic model beside it and the measured break-even bandwidth.");
  p.AddString("grid", &c.grid, "quick (a few minutes on 2 cores) or paper (the full grid, hours)");
  p.AddString("codecs", &c.codecs, "override: comma list of codecs (identity is the raw reference)");
  p.AddString("models", &c.models,
              "override: comma list of presets (qwen2.5-3b, llama-3.2-3b, phi-3.5-mini, qwen2.5-7b, llama-3.1-8b, "
              "mistral-7b, llama-3.1-70b) and smollm2-135m-real (real KV from --real-kv)");
  p.AddString("tokens", &c.tokens, "override: comma list of prompt lengths (synthetic inputs)");
  p.AddString("rates", &c.rates, "override: comma list of 1gbit, 5gbit, ..., 500mbit, veth (unshaped), loopback");
  p.AddString("modes", &c.modes, "override: pipelined, sequential");
  p.AddInt("repeats", &c.repeats, "override: timed transfers per point (median, min/max, IQR reported)");
  p.AddInt("warmup", &c.warmup, "override: untimed transfers per point");
  p.AddString("transport", &c.transport, "tcp (default), ucx-tcp");
  p.AddString("real-kv", &c.real_kv, "directory with K.npy and V.npy (kvs-generate --dump-kv) for smollm2-135m-real");
  p.AddString("netns-script", &c.netns_script, "deploy/netns/kvs-netns.sh");
  p.AddString("netns-name", &c.netns_name, "namespace name prefix (namespaces NAME-a, NAME-b)");
  p.AddString("subnet", &c.subnet, "first three octets of the veth pair's addresses");
  p.AddDouble("baseline-seconds", &c.baseline_seconds, "iperf3 duration per rate");
  p.AddInt("baseline-port", &c.baseline_port, "iperf3 port");
  p.AddInt("layers-per-chunk", &c.layers_per_chunk, "layers per chunk");
  p.AddBool("chunk-timings", &c.chunk_timings, "keep every chunk's stage timings in the JSON (large)");
  p.AddBool("plan", &c.plan, "print the grid and a lower bound of its time; run nothing");
  p.AddString("json", &c.json, "results JSON file ('-' = stdout, '' = none)");
  p.AddString("log-level", &c.log_level, "error, warn, info, debug");
  if (std::optional<int> rc = p.ParseForMain(argc, argv)) return *rc;
  ConfigureLogging(c.log_level);
  std::vector<std::string> argv_all(argv, argv + argc);
  static TeardownExec teardown;
  if (!c.plan) {
    teardown.command = absl::StrCat(ShQuote(c.netns_script), " down --name ", ShQuote(c.netns_name),
                                    "; echo 'kvs-bench sweep: interrupted, namespaces removed' >&2; exit 130");
    teardown.argv[0] = "/bin/sh";
    teardown.argv[1] = "-c";
    teardown.argv[2] = teardown.command.c_str();
    g_teardown = &teardown;
    struct sigaction sa {};
    sa.sa_handler = OnSweepSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
  }
  absl::Status s = Sweep(c, argv_all);
  if (!s.ok()) {
    std::cerr << "\nkvs-bench sweep: " << s.ToString() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kvs::bench
