// Google Benchmark micro-benchmarks: one thread, every codec, encode and decode of a 4-layer
// slab of Llama-3.1-8B's KV at 1024 tokens (16 MiB fp16), plus memcpy of the same bytes.
//   ./build/bench/codec_micro_bench --benchmark_filter=uniform_int8
#include <benchmark/benchmark.h>

#include <cstring>

#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"

namespace kvs {
namespace {

const KvGeometry kGeom{4, 8, 1024, 128};

const OwnedKv& Input() {
  static const OwnedKv* kv = new OwnedKv(MakeSyntheticKv(kGeom, 1234));
  return *kv;
}

void BM_Memcpy(benchmark::State& state) {
  const OwnedKv& kv = Input();
  std::vector<uint16_t> dst(kv.k.size() * 2);
  for (auto _ : state) {
    std::memcpy(dst.data(), kv.k.data(), kv.k.size() * 2);
    std::memcpy(dst.data() + kv.k.size(), kv.v.data(), kv.v.size() * 2);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * kGeom.raw_bytes());
}
BENCHMARK(BM_Memcpy);

void BM_Codec(benchmark::State& state, const std::string& name, bool encode) {
  auto codec = CodecRegistry::Builtin().Create(name);
  if (!codec.ok()) {
    state.SkipWithError(std::string(codec.status().message()).c_str());
    return;
  }
  const OwnedKv& kv = Input();
  auto payload = EncodeToVector(**codec, kv.view(), nullptr);
  if (!payload.ok()) {
    state.SkipWithError(std::string(payload.status().message()).c_str());
    return;
  }
  std::vector<uint8_t> buf(*(*codec)->MaxEncodedBytes(kGeom));
  std::vector<uint8_t> ws((*codec)->WorkspaceBytes(kGeom, nullptr));
  OwnedKv out = OwnedKv::Zeros(kGeom);
  for (auto _ : state) {
    if (encode) {
      auto n = (*codec)->Encode(kv.view(), absl::MakeSpan(buf), absl::MakeSpan(ws), nullptr);
      benchmark::DoNotOptimize(n);
    } else {
      auto s = (*codec)->Decode(*payload, out.mutable_view(), absl::MakeSpan(ws), nullptr);
      benchmark::DoNotOptimize(s);
    }
  }
  state.SetBytesProcessed(state.iterations() * kGeom.raw_bytes());
  state.counters["ratio"] = static_cast<double>(kGeom.raw_bytes()) / payload->size();
}

int RegisterAll() {
  for (const std::string& name : CodecRegistry::Builtin().Names()) {
    if (name == "palu_lr" || name == "palu_int4") continue;  // seconds per run: see kvs-bench codecs
    benchmark::RegisterBenchmark(("BM_Encode/" + name).c_str(), BM_Codec, name, true);
    benchmark::RegisterBenchmark(("BM_Decode/" + name).c_str(), BM_Codec, name, false);
  }
  return 0;
}
const int kRegistered = RegisterAll();

}  // namespace
}  // namespace kvs

BENCHMARK_MAIN();
