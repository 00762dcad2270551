// kvs-generate: one process, prompt -> text, on a GGUF Llama-family model (libtorch, CPU).
//
//   kvs-generate --model tests/data/models/stories260K.gguf --prompt "Once upon a time" --max-tokens 64
//   kvs-generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --chat \
//                --prompt "What is the capital of France?" --dump-kv /tmp/kv
//
// The prompt and the generated text go to stdout (streamed); statistics (tokens/s for prefill
// and decode) go to stderr. Greedy by default; --temperature/--top-p/--seed sample. --chat wraps
// the prompt in the model's chat template. --dump-kv DIR writes the prompt's KV cache as
// DIR/K.npy and DIR/V.npy (fp16 [L, H_kv, S, D], keys after RoPE) plus DIR/tokens.npy (int32),
// the input format of kvs-codec.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/cli/args.h"
#include "common/log/log.h"
#include "common/npy/npy.h"
#include "common/status/status.h"
#include "services/runner/generate.h"
#include "services/runner/gguf.h"
#include "services/runner/model.h"
#include "services/runner/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string model;
  std::string prompt;
  int64_t max_tokens = 64;
  double temperature = 0.0;
  double top_p = 1.0;
  int64_t seed = 0;
  bool chat = false;
  std::string system;
  std::string dump_kv;
  int64_t threads = 0;  // 0: every hardware thread
  std::string log_level = "warn";
};

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

absl::Status DumpKv(const std::string& dir, const kvs::KvCache& cache,
                    const std::vector<int32_t>& tokens) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("create ", dir, ": ", ec.message()));
  std::vector<uint16_t> k, v;
  KVS_RETURN_IF_ERROR(cache.ExportF16(&k, &v));
  const kvs::KvGeometry g = cache.geometry();
  const std::vector<int64_t> shape = {g.layers, g.heads, g.tokens, g.head_dim};
  auto bytes = [](const auto& vec) {
    return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(vec.data()),
                               vec.size() * sizeof(vec[0]));
  };
  KVS_RETURN_IF_ERROR(kvs::WriteNpy(dir + "/K.npy", "<f2", shape, bytes(k)));
  KVS_RETURN_IF_ERROR(kvs::WriteNpy(dir + "/V.npy", "<f2", shape, bytes(v)));
  return kvs::WriteNpy(dir + "/tokens.npy", "<i4", {static_cast<int64_t>(tokens.size())},
                       bytes(tokens));
}

absl::Status Run(const Flags& f) {
  if (f.model.empty()) return absl::InvalidArgumentError("--model is required");
  if (f.max_tokens < 0) return absl::InvalidArgumentError("--max-tokens must be >= 0");
  if (f.top_p <= 0.0 || f.top_p > 1.0) return absl::InvalidArgumentError("--top-p must be in (0, 1]");

  const auto t_load = Clock::now();
  KVS_ASSIGN_OR_RETURN(kvs::GgufFile gguf, kvs::GgufFile::Open(f.model));
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<kvs::Tokenizer> tok, kvs::Tokenizer::FromGguf(gguf));
  kvs::RunnerOptions ro;
  ro.threads = f.threads > 0 ? static_cast<int>(f.threads)
                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<kvs::LlamaModel> model, kvs::LlamaModel::Load(gguf, ro));
  const double load_s = Seconds(t_load, Clock::now());

  std::string text = f.prompt;
  kvs::EncodeOptions eo;
  eo.add_bos = tok->add_bos_by_default();
  if (f.chat) {
    KVS_ASSIGN_OR_RETURN(kvs::ChatTemplate ct, kvs::ChatTemplate::FromGguf(gguf));
    std::vector<kvs::ChatMessage> msgs;
    if (!f.system.empty()) msgs.push_back({"system", f.system});
    msgs.push_back({"user", f.prompt});
    KVS_ASSIGN_OR_RETURN(text, ct.Apply(msgs, /*add_generation_prompt=*/true));
    eo.parse_special = true;
  }
  const std::vector<int32_t> prompt = tok->Encode(text, eo);
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");

  std::cout << f.prompt << (f.chat ? "\n" : "") << std::flush;
  const auto t0 = Clock::now();
  KVS_ASSIGN_OR_RETURN(kvs::PrefillResult pre, model->Prefill(prompt));
  const auto t1 = Clock::now();
  if (!f.dump_kv.empty()) KVS_RETURN_IF_ERROR(DumpKv(f.dump_kv, pre.cache, prompt));
  const kvs::KvGeometry prompt_kv = pre.cache.geometry();

  kvs::GenerateOptions go;
  go.max_tokens = static_cast<int>(f.max_tokens);
  go.sampling.temperature = f.temperature;
  go.sampling.top_p = f.top_p;
  go.sampling.seed = static_cast<uint64_t>(f.seed);
  go.stop_tokens = tok->stop_tokens();
  int32_t prev = prompt.back();
  bool stopped = false;
  const auto t2 = Clock::now();
  KVS_ASSIGN_OR_RETURN(
      std::vector<int32_t> out,
      kvs::Generate(*model, &pre.cache, std::move(pre.last_logits), go, [&](int32_t t) {
        for (int32_t s : go.stop_tokens) stopped |= (s == t);
        if (!stopped) std::cout << tok->DecodeToken(prev, t) << std::flush;
        prev = t;
      }));
  const auto t3 = Clock::now();
  std::cout << "\n" << std::flush;

  const kvs::ModelConfig& c = model->config();
  const double prefill_s = Seconds(t0, t1), decode_s = Seconds(t2, t3);
  // The first generated token comes from the prefill logits; each later one is a decode step.
  const size_t steps = out.empty() ? 0 : out.size() - 1;
  std::cerr << absl::StrFormat(
      "model: %s\nload: %.2f s, %d threads\nprefill: %zu tokens in %.3f s (%.1f tokens/s)\n"
      "decode: %zu tokens in %.3f s (%.1f tokens/s)%s\nprompt kv cache: %s, %.1f KiB fp16\n",
      c.ToString(), load_s, ro.threads, prompt.size(), prefill_s,
      prefill_s > 0 ? prompt.size() / prefill_s : 0.0, out.size(), decode_s,
      decode_s > 0 ? steps / decode_s : 0.0, stopped ? ", stopped at a stop token" : "",
      prompt_kv.ToString(), prompt_kv.raw_bytes() / 1024.0);
  if (!f.dump_kv.empty()) std::cerr << "kv dumped to " << f.dump_kv << "/{K,V,tokens}.npy\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  kvs::ArgParser p("kvs-generate", "Generate text with a GGUF Llama-family model (libtorch, CPU).");
  p.AddString("model", &f.model, "GGUF model file (llama or qwen2 architecture)");
  p.AddString("prompt", &f.prompt, "prompt text");
  p.AddInt("max-tokens", &f.max_tokens, "tokens to generate at most");
  p.AddDouble("temperature", &f.temperature, "sampling temperature; 0 = greedy");
  p.AddDouble("top-p", &f.top_p, "nucleus sampling mass (with --temperature > 0)");
  p.AddInt("seed", &f.seed, "sampling seed");
  p.AddBool("chat", &f.chat, "wrap the prompt in the model's chat template (ChatML)");
  p.AddString("system", &f.system, "system message for --chat (default: the template's own)");
  p.AddString("dump-kv", &f.dump_kv, "directory for the prompt's K.npy, V.npy (fp16 [L,H,S,D]) and tokens.npy");
  p.AddInt("threads", &f.threads, "libtorch/OpenBLAS threads; 0 = all hardware threads");
  p.AddString("log-level", &f.log_level, "error, warn, info, debug");
  if (std::optional<int> rc = p.ParseForMain(argc, argv)) return *rc;
  if (!kvs::ConfigureLogging(f.log_level)) {
    std::cerr << "kvs-generate: unknown --log-level " << f.log_level << "\n";
    return 2;
  }
  if (absl::Status s = Run(f); !s.ok()) {
    std::cerr << "kvs-generate: " << s << "\n";
    return 1;
  }
  return 0;
}
