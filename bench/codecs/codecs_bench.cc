#include "bench/codecs/codecs_bench.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/tensor/presets.h"
#include "common/cli/args.h"
#include "common/half/half.h"
#include "common/npy/npy.h"
#include "common/status/status.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "kernels/fidelity.h"
#if KVS_BENCH_HAS_CUDA
#include "bench/cuda/cuda_codecs_bench.h"
#endif

namespace kvs::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  std::string model = "llama-3.1-8b";
  int64_t tokens = 1024;
  std::string keys, values;  // optional .npy input
  std::string codecs = "all";
  std::string path = "fast";
  int64_t threads = 0;  // 0: all hardware threads
  int64_t repeats = 5;
  double max_seconds = 20;  // per codec and measurement, after the first timed run
  std::string json;         // file, or "-" for stdout
  std::string device = "cpu";
  bool fp8_compat = false;
  bool zero_fill = false;
  bool sweep = false;  // --device cuda: the Llama-3.1-8B/70B x 1K..32K grid
};

struct Row {
  std::string codec, family;
  double ratio = 0;
  size_t payload = 0;
  double enc_1t = 0, dec_1t = 0, enc_mt = 0, dec_mt = 0;
  double key_cos = 0, val_cos = 0, key_mse = 0, val_mse = 0;
  int repeats = 0;
};

// Median of `repeats` timed runs after one warm-up; stops early once max_seconds is spent.
template <typename Fn>
absl::StatusOr<double> MedianSeconds(Fn&& fn, int64_t repeats, double max_seconds) {
  KVS_RETURN_IF_ERROR(fn());  // warm-up: first touch of pages, caches, lazy init
  std::vector<double> t;
  const auto start = Clock::now();
  for (int64_t i = 0; i < repeats; ++i) {
    const auto a = Clock::now();
    KVS_RETURN_IF_ERROR(fn());
    t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
    if (std::chrono::duration<double>(Clock::now() - start).count() > max_seconds) break;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

absl::StatusOr<OwnedKv> LoadInput(const Config& c, std::string* source) {
  if (!c.keys.empty() || !c.values.empty()) {
    KVS_ASSIGN_OR_RETURN(OwnedKv kv, ReadKvNpy(c.keys, c.values));
    *source = "real KV from " + c.keys + " and " + c.values;
    return kv;
  }
  KVS_ASSIGN_OR_RETURN(KvGeometry g, PresetGeometry(c.model, c.tokens));
  *source = std::string(DescribeSynthetic(SynthKind::kRealistic));
  return MakeSyntheticKv(g, 1234, SynthKind::kRealistic);
}

double Gbps(int64_t bytes, double seconds) { return bytes / seconds / 1e9; }

absl::Status Run(const Config& c) {
  if (c.device == "cuda") {
#if KVS_BENCH_HAS_CUDA
    if (!c.keys.empty() || !c.values.empty()) {
      return absl::InvalidArgumentError("--device cuda takes synthetic KV only (no --keys/--values)");
    }
    CudaBenchConfig cc;
    if (!c.sweep) {
      cc.models = {c.model};
      cc.tokens = {c.tokens};
    }
    if (c.codecs != "all") cc.codecs = absl::StrSplit(c.codecs, ',', absl::SkipEmpty());
    cc.repeats = c.repeats;
    cc.fp8_compat = c.fp8_compat;
    cc.zero_fill = c.zero_fill;
    cc.json = c.json;
    return RunCudaCodecsBench(cc, std::cout);
#else
    return absl::UnimplementedError("--device cuda: this build has no CUDA (KVS_WITH_CUDA=OFF)");
#endif
  }
  if (c.device != "cpu") {
    return absl::InvalidArgumentError("--device must be cpu or cuda, got " + c.device);
  }
  std::string source;
  KVS_ASSIGN_OR_RETURN(OwnedKv kv, LoadInput(c, &source));
  const KvGeometry& g = kv.geom;
  const int64_t raw = g.raw_bytes();
  const int threads = c.threads > 0 ? static_cast<int>(c.threads)
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ThreadPool pool(threads);

  CodecRegistry registry = CodecRegistry::Builtin();
  std::vector<std::string> names;
  if (c.codecs == "all") {
    names = registry.Names();
  } else {
    names = absl::StrSplit(c.codecs, ',', absl::SkipEmpty());
  }
  CodecOptions opts;
  if (c.path == "reference") {
    opts.path = CodecPath::kReference;
  } else if (c.path != "fast") {
    return absl::InvalidArgumentError("--path must be fast or reference");
  }
  opts.fp8_compat = c.fp8_compat;
  opts.prune_fill = c.zero_fill ? PruneFill::kZero : PruneFill::kMask;

  // memcpy baseline over the same K+V bytes, single thread and on the pool.
  std::vector<uint8_t> dst(raw);
  auto copy_1t = [&]() -> absl::Status {
    std::memcpy(dst.data(), kv.k.data(), raw / 2);
    std::memcpy(dst.data() + raw / 2, kv.v.data(), raw / 2);
    return absl::OkStatus();
  };
  auto copy_mt = [&]() -> absl::Status {
    const int64_t block = 1 << 20;
    ParallelFor(&pool, (raw + block - 1) / block, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t off = i * block, n = std::min(block, raw - off);
        const uint8_t* src = off < raw / 2 ? reinterpret_cast<const uint8_t*>(kv.k.data()) + off
                                           : reinterpret_cast<const uint8_t*>(kv.v.data()) + off - raw / 2;
        std::memcpy(dst.data() + off, src, std::min(n, off < raw / 2 ? raw / 2 - off : n));
        if (off < raw / 2 && off + n > raw / 2) {
          std::memcpy(dst.data() + raw / 2, kv.v.data(), off + n - raw / 2);
        }
      }
    });
    return absl::OkStatus();
  };
  KVS_ASSIGN_OR_RETURN(double t_copy1, MedianSeconds(copy_1t, c.repeats, c.max_seconds));
  KVS_ASSIGN_OR_RETURN(double t_copymt, MedianSeconds(copy_mt, c.repeats, c.max_seconds));
  const double memcpy_1t = Gbps(raw, t_copy1), memcpy_mt = Gbps(raw, t_copymt);
  std::vector<uint8_t>().swap(dst);

  std::cerr << absl::StrFormat(
      "kvs-bench codecs: %s %s, K+V %.1f MiB fp16, %s path, %d threads\ninput: %s\n",
      c.keys.empty() ? c.model : "npy", g.ToString(), raw / 1048576.0, c.path, threads, source);

  std::vector<Row> rows;
  OwnedKv out = OwnedKv::Zeros(g);
  for (const std::string& name : names) {
    KVS_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, registry.Create(name, opts));
    Row r;
    r.codec = name;
    r.family = std::string(codec->info().family);
    KVS_ASSIGN_OR_RETURN(size_t cap, codec->MaxEncodedBytes(g));
    std::vector<uint8_t> payload(cap);
    std::vector<uint8_t> ws(codec->WorkspaceBytes(g, &pool));
    size_t n = 0;
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      auto enc = [&]() -> absl::Status {
        KVS_ASSIGN_OR_RETURN(n, codec->Encode(kv.view(), absl::MakeSpan(payload), absl::MakeSpan(ws), p));
        return absl::OkStatus();
      };
      KVS_ASSIGN_OR_RETURN(double te, MedianSeconds(enc, c.repeats, c.max_seconds));
      auto dec = [&]() -> absl::Status {
        return codec->Decode(absl::MakeConstSpan(payload.data(), n), out.mutable_view(),
                             absl::MakeSpan(ws), p);
      };
      KVS_ASSIGN_OR_RETURN(double td, MedianSeconds(dec, c.repeats, c.max_seconds));
      (p == nullptr ? r.enc_1t : r.enc_mt) = Gbps(raw, te);
      (p == nullptr ? r.dec_1t : r.dec_mt) = Gbps(raw, td);
    }
    r.payload = n;
    r.ratio = static_cast<double>(raw) / n;
    const Fidelity f = MeasureFidelity(kv.view(), out.view());
    r.key_cos = f.mean_key_cosine;
    r.val_cos = f.mean_value_cosine;
    r.key_mse = f.mean_key_mse;
    r.val_mse = f.mean_value_mse;
    rows.push_back(r);
    std::cerr << absl::StrFormat("  %-22s done (enc 1t %.2f GB/s)\n", name, r.enc_1t);
  }

  std::cout << absl::StrFormat(
      "\nmemcpy of the same %.1f MiB: %.2f GB/s on 1 thread, %.2f GB/s on %d threads\n"
      "throughput = uncompressed K+V bytes / time (median of up to %d runs after a warm-up)\n\n",
      raw / 1048576.0, memcpy_1t, memcpy_mt, threads, static_cast<int>(c.repeats));
  std::cout << absl::StrFormat("%-21s %-12s %7s | %7s %6s %7s %6s | %7s %7s | %8s %8s\n", "codec",
                               "family", "ratio", "enc 1t", "xcpy", "dec 1t", "xcpy", "enc mt",
                               "dec mt", "key cos", "val cos");
  std::cout << std::string(121, '-') << "\n";
  for (const Row& r : rows) {
    std::cout << absl::StrFormat(
        "%-21s %-12s %7.3f | %7.2f %6.2f %7.2f %6.2f | %7.2f %7.2f | %8.5f %8.5f\n", r.codec,
        r.family, r.ratio, r.enc_1t, r.enc_1t / memcpy_1t, r.dec_1t, r.dec_1t / memcpy_1t, r.enc_mt,
        r.dec_mt, r.key_cos, r.val_cos);
  }
  std::cout << "(GB/s = 1e9 bytes/s; xcpy = single-thread GB/s / single-thread memcpy GB/s)\n";

  if (!c.json.empty()) {
    nlohmann::json j;
    j["benchmark"] = "codecs";
    j["device"] = c.device;
    j["geometry"] = {{"layers", g.layers}, {"heads", g.heads}, {"tokens", g.tokens}, {"head_dim", g.head_dim}};
    j["model"] = c.keys.empty() ? c.model : "npy";
    j["input"] = source;
    j["path"] = c.path;
    j["threads"] = threads;
    j["bytes_raw"] = raw;
    j["memcpy_gbps_1t"] = memcpy_1t;
    j["memcpy_gbps_mt"] = memcpy_mt;
    j["method"] = "median of up to --repeats timed runs after one warm-up, steady_clock";
    j["codecs"] = nlohmann::json::array();
    for (const Row& r : rows) {
      j["codecs"].push_back({{"codec", r.codec},
                             {"family", r.family},
                             {"ratio", r.ratio},
                             {"payload_bytes", r.payload},
                             {"encode_gbps_1t", r.enc_1t},
                             {"decode_gbps_1t", r.dec_1t},
                             {"encode_gbps_mt", r.enc_mt},
                             {"decode_gbps_mt", r.dec_mt},
                             {"encode_x_memcpy_1t", r.enc_1t / memcpy_1t},
                             {"decode_x_memcpy_1t", r.dec_1t / memcpy_1t},
                             {"memcpy_gbps_1t", memcpy_1t},
                             {"memcpy_gbps_mt", memcpy_mt},
                             {"key_cosine", r.key_cos},
                             {"value_cosine", r.val_cos},
                             {"key_mse", r.key_mse},
                             {"value_mse", r.val_mse}});
    }
    if (c.json == "-") {
      std::cout << j.dump(2) << "\n";
    } else {
      std::ofstream f(c.json);
      if (!f) return absl::PermissionDeniedError("cannot write " + c.json);
      f << j.dump(2) << "\n";
    }
  }
  return absl::OkStatus();
}

}  // namespace

int RunCodecsBench(int argc, char** argv) {
  Config c;
  ArgParser p("kvs-bench codecs",
              "Encode/decode throughput of every codec vs memcpy, ratio and cosine.");
  p.AddString("model", &c.model, "geometry preset (llama-3.1-8b, qwen2.5-7b, llama-3.1-70b, ...)");
  p.AddInt("tokens", &c.tokens, "tokens S of the synthetic KV cache");
  p.AddString("keys", &c.keys, "K as fp16 [L,H,S,D] .npy (real KV; overrides --model)");
  p.AddString("values", &c.values, "V as fp16 [L,H,S,D] .npy");
  p.AddString("codecs", &c.codecs, "comma-separated codec names, or all");
  p.AddString("path", &c.path, "fast or reference");
  p.AddInt("threads", &c.threads, "threads for the multi-thread columns (0: all cores)");
  p.AddInt("repeats", &c.repeats, "timed runs per measurement (median reported)");
  p.AddDouble("max-seconds", &c.max_seconds, "stop repeating a measurement after this long");
  p.AddString("json", &c.json, "write results JSON to this file ('-' for stdout)");
  p.AddString("device", &c.device, "cpu, or cuda (CUDA builds: CUDA codecs vs a device copy)");
  p.AddBool("sweep", &c.sweep,
            "with --device cuda: Llama-3.1-8B and -70B at 1K, 4K, 16K and 32K tokens");
  p.AddBool("fp8-compat", &c.fp8_compat, "fp8_e4m3 in the KVShuttle reference's offset-uint8 mode");
  p.AddBool("zero-fill", &c.zero_fill, "pruning codecs zero-fill instead of masking");
  if (std::optional<int> rc = p.ParseForMain(argc, argv)) return *rc;
  absl::Status s = Run(c);
  if (!s.ok()) {
    std::cerr << "kvs-bench codecs: " << s.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kvs::bench
