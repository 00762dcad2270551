// kvs-codec: encode and decode KV caches stored as NumPy .npy files (fp16, [L, H, S, D]).
//
//   kvs-codec list
//   kvs-codec encode --codec uniform_int8 --keys K.npy --values V.npy --out kv.kvsc
//   kvs-codec decode --in kv.kvsc --keys K.npy --values V.npy [--out-keys K2.npy --out-values V2.npy]
//   kvs-codec synth  --model llama-3.1-8b --tokens 256 --out-dir DIR     (realistic synthetic K/V)
//
// encode and decode print the ratio (every payload byte counted: 32-byte header included) and the
// per-layer key/value cosine and MSE of the reconstruction against the given K and V.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/cli/args.h"
#include "common/npy/npy.h"
#include "common/status/status.h"
#include "common/synth/synthetic_kv.h"
#include "common/tensor/presets.h"
#include "kernels/codec.h"
#include "kernels/fidelity.h"

namespace kvs {
namespace {

struct Options {
  std::string codec, keys, values, in, out, out_keys, out_values, path = "fast", model = "llama-3.1-8b",
                                                                     out_dir = ".";
  int64_t threads = 0, tokens = 256, seed = 1234;
  bool fp8_compat = false, zero_fill = false;
};

absl::Status WriteKv(const OwnedKv& kv, const std::string& kpath, const std::string& vpath) {
  const std::vector<int64_t> shape{kv.geom.layers, kv.geom.heads, kv.geom.tokens, kv.geom.head_dim};
  auto bytes = [](const std::vector<uint16_t>& v) {
    return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 2);
  };
  KVS_RETURN_IF_ERROR(WriteNpy(kpath, "<f2", shape, bytes(kv.k)));
  return WriteNpy(vpath, "<f2", shape, bytes(kv.v));
}

void PrintReport(const std::string& codec, const KvGeometry& g, size_t payload,
                 const OwnedKv& orig, const OwnedKv& recon) {
  const Fidelity f = MeasureFidelity(orig.view(), recon.view());
  std::cout << absl::StrFormat(
      "codec %s  geometry %s\nraw %d bytes, payload %d bytes (header included), ratio %.4f\n", codec,
      g.ToString(), g.raw_bytes(), payload, static_cast<double>(g.raw_bytes()) / payload);
  std::cout << absl::StrFormat("%5s %12s %12s %12s %12s\n", "layer", "key cos", "value cos",
                               "key mse", "value mse");
  for (int64_t l = 0; l < g.layers; ++l) {
    std::cout << absl::StrFormat("%5d %12.6f %12.6f %12.4e %12.4e\n", l, f.key_cosine[l],
                                 f.value_cosine[l], f.key_mse[l], f.value_mse[l]);
  }
  std::cout << absl::StrFormat("%5s %12.6f %12.6f %12.4e %12.4e\n", "mean", f.mean_key_cosine,
                               f.mean_value_cosine, f.mean_key_mse, f.mean_value_mse);
}

absl::StatusOr<std::vector<uint8_t>> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError("cannot open " + path);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

CodecOptions MakeCodecOptions(const Options& o) {
  CodecOptions c;
  c.path = o.path == "reference" ? CodecPath::kReference : CodecPath::kFast;
  c.fp8_compat = o.fp8_compat;
  c.prune_fill = o.zero_fill ? PruneFill::kZero : PruneFill::kMask;
  return c;
}

absl::Status Encode(const Options& o, ThreadPool* pool) {
  if (o.codec.empty() || o.out.empty()) return absl::InvalidArgumentError("--codec and --out are required");
  KVS_ASSIGN_OR_RETURN(OwnedKv kv, ReadKvNpy(o.keys, o.values));
  CodecRegistry registry = CodecRegistry::Builtin();
  KVS_ASSIGN_OR_RETURN(auto codec, registry.Create(o.codec, MakeCodecOptions(o)));
  KVS_ASSIGN_OR_RETURN(std::vector<uint8_t> payload, EncodeToVector(*codec, kv.view(), pool));
  std::ofstream f(o.out, std::ios::binary);
  f.write(reinterpret_cast<const char*>(payload.data()), payload.size());
  if (!f) return absl::PermissionDeniedError("cannot write " + o.out);
  OwnedKv recon = OwnedKv::Zeros(kv.geom);
  KVS_RETURN_IF_ERROR(DecodeFromVector(*codec, payload, recon.mutable_view(), pool));
  PrintReport(o.codec, kv.geom, payload.size(), kv, recon);
  return absl::OkStatus();
}

absl::Status Decode(const Options& o, ThreadPool* pool) {
  if (o.in.empty()) return absl::InvalidArgumentError("--in is required");
  KVS_ASSIGN_OR_RETURN(std::vector<uint8_t> payload, ReadFile(o.in));
  KVS_ASSIGN_OR_RETURN(PayloadSummary sum, InspectPayload(payload));
  CodecRegistry registry = CodecRegistry::Builtin();
  KVS_ASSIGN_OR_RETURN(auto codec, registry.Create(sum.codec, MakeCodecOptions(o)));
  KVS_ASSIGN_OR_RETURN(OwnedKv kv, ReadKvNpy(o.keys, o.values));
  if (kv.geom != sum.geom) {
    return absl::InvalidArgumentError("payload geometry " + sum.geom.ToString() +
                                      " differs from the given K/V " + kv.geom.ToString());
  }
  OwnedKv recon = OwnedKv::Zeros(kv.geom);
  std::vector<uint8_t> keep(kv.geom.tokens);
  KVS_RETURN_IF_ERROR(DecodeFromVector(*codec, payload, recon.mutable_view(), pool, absl::MakeSpan(keep)));
  PrintReport(std::string(codec->name()), kv.geom, payload.size(), kv, recon);
  int64_t evicted = 0;
  for (uint8_t m : keep) evicted += m == 0;
  if (evicted > 0) std::cout << "evicted token positions (masked): " << evicted << "\n";
  if (!o.out_keys.empty() || !o.out_values.empty()) {
    if (o.out_keys.empty() || o.out_values.empty()) {
      return absl::InvalidArgumentError("--out-keys and --out-values go together");
    }
    KVS_RETURN_IF_ERROR(WriteKv(recon, o.out_keys, o.out_values));
  }
  return absl::OkStatus();
}

absl::Status Synth(const Options& o) {
  KVS_ASSIGN_OR_RETURN(KvGeometry g, PresetGeometry(o.model, o.tokens));
  OwnedKv kv = MakeSyntheticKv(g, static_cast<uint64_t>(o.seed));
  std::filesystem::create_directories(o.out_dir);
  KVS_RETURN_IF_ERROR(WriteKv(kv, o.out_dir + "/K.npy", o.out_dir + "/V.npy"));
  std::cout << "wrote " << o.out_dir << "/K.npy and V.npy " << g.ToString() << ": "
            << DescribeSynthetic(SynthKind::kRealistic) << "\n";
  return absl::OkStatus();
}

void List() {
  CodecRegistry registry = CodecRegistry::Builtin();
  std::cout << absl::StrFormat("%-22s %-4s %-13s %s\n", "codec", "id", "family", "what it does");
  for (const std::string& n : registry.Names()) {
    auto c = registry.Create(n);
    if (!c.ok()) continue;
    const CodecInfo& i = (*c)->info();
    std::cout << absl::StrFormat("%-22s %-4d %-13s %s\n", n, static_cast<int>(i.id), i.family, i.description);
  }
}

int Main(int argc, char** argv) {
  const std::string usage =
      "usage: kvs-codec list | encode | decode | synth [options]   (kvs-codec <cmd> --help)\n";
  if (argc < 2) {
    std::cerr << usage;
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h") {
    std::cout << usage;
    return 0;
  }
  if (cmd == "list") {
    List();
    return 0;
  }
  Options o;
  ArgParser p("kvs-codec " + cmd, "Encode/decode fp16 [L,H,S,D] .npy KV caches with a kvshuttle codec.");
  p.AddString("codec", &o.codec, "codec name (encode)");
  p.AddString("keys", &o.keys, "K .npy (fp16 [L,H,S,D])");
  p.AddString("values", &o.values, "V .npy");
  p.AddString("in", &o.in, "payload file (decode)");
  p.AddString("out", &o.out, "payload file to write (encode)");
  p.AddString("out-keys", &o.out_keys, "write decoded K .npy (decode)");
  p.AddString("out-values", &o.out_values, "write decoded V .npy (decode)");
  p.AddString("path", &o.path, "fast or reference");
  p.AddInt("threads", &o.threads, "threads (0: all cores)");
  p.AddBool("fp8-compat", &o.fp8_compat, "fp8_e4m3: KVShuttle reference offset-uint8 mode");
  p.AddBool("zero-fill", &o.zero_fill, "pruning codecs: zero-fill instead of masking");
  p.AddString("model", &o.model, "geometry preset (synth)");
  p.AddInt("tokens", &o.tokens, "tokens (synth)");
  p.AddInt("seed", &o.seed, "seed (synth)");
  p.AddString("out-dir", &o.out_dir, "output directory (synth)");
  absl::Status s = p.Parse(argc - 1, argv + 1);
  if (s.ok() && p.help_requested()) {
    std::cout << p.Usage();
    return 0;
  }
  if (s.ok() && o.path != "fast" && o.path != "reference") {
    s = absl::InvalidArgumentError("--path must be fast or reference");
  }
  if (s.ok()) {
    ThreadPool pool(static_cast<int>(o.threads));
    if (cmd == "encode") {
      s = Encode(o, &pool);
    } else if (cmd == "decode") {
      s = Decode(o, &pool);
    } else if (cmd == "synth") {
      s = Synth(o);
    } else {
      std::cerr << usage;
      return 2;
    }
  }
  if (!s.ok()) {
    std::cerr << "kvs-codec " << cmd << ": " << s.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvs

int main(int argc, char** argv) { return kvs::Main(argc, argv); }
