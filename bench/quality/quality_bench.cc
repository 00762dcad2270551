// bench/quality/quality_bench.cc — `kvs-bench quality` (see quality_bench.h).
#include "bench/quality/quality_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/cli/args.h"
#include "common/status/status.h"
#include "common/synth/synthetic_kv.h"
#include "common/thread_pool/thread_pool.h"
#include "kernels/codec.h"
#include "kernels/fidelity.h"
#include "services/runner/gguf.h"
#include "services/runner/model.h"
#include "services/runner/quality.h"
#include "services/runner/tokenizer.h"

namespace kvs::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  std::string model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string text = "tests/data/text/wikitext-2-raw-test-excerpt.txt";
  int64_t prompts = 20;
  int64_t min_tokens = 128;  // the paper's 128-512 "tokens" = 512-2048 characters
  int64_t max_tokens = 512;
  int64_t seed = 42;
  std::string codecs = "all";
  std::string chat = "auto";  // auto: when the model has a chat template
  int64_t free_run = 64;
  std::string prune_fill = "mask";
  std::string path = "fast";
  bool fp8_compat = false;
  int64_t threads = 0;
  int64_t bootstrap = 10000;
  int64_t perplexity_windows = 0;
  int64_t window = 512;
  std::string json;
};

// Per codec, one value per prompt.
struct Series {
  std::vector<double> ratio, key_cos, val_cos, key_mse, val_mse, ta, ppl, dppl, free_agree,
      first_div, evicted;
};

struct CodecRow {
  std::string name, family;
  Series s;
  std::string error;  // non-empty: the codec failed (e.g. not implemented yet)
};

int64_t Utf8Chars(absl::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

// The paper's prompt draw (CODECS.md §4.2): strip each line, keep lines of 4*min..4*max
// characters, draw `count` without replacement (seeded), keep them in corpus order.
absl::StatusOr<std::vector<std::string>> DrawPrompts(const Config& c) {
  std::ifstream in(c.text, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot read --text " + c.text);
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> eligible;
  for (absl::string_view line : absl::StrSplit(ss.str(), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    const int64_t n = Utf8Chars(line);
    if (n >= 4 * c.min_tokens && n <= 4 * c.max_tokens) eligible.emplace_back(line);
  }
  if (static_cast<int64_t>(eligible.size()) < c.prompts) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has %d lines of %d-%d characters, fewer than --prompts %d", c.text, eligible.size(),
        4 * c.min_tokens, 4 * c.max_tokens, c.prompts));
  }
  std::vector<size_t> idx(eligible.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(static_cast<uint64_t>(c.seed));
  for (int64_t i = 0; i < c.prompts; ++i) {  // partial Fisher-Yates
    std::uniform_int_distribution<size_t> pick(static_cast<size_t>(i), idx.size() - 1);
    std::swap(idx[static_cast<size_t>(i)], idx[pick(rng)]);
  }
  idx.resize(static_cast<size_t>(c.prompts));
  std::sort(idx.begin(), idx.end());
  std::vector<std::string> out;
  for (size_t i : idx) out.push_back(eligible[i]);
  return out;
}

Logits Rows(const Logits& l, int64_t begin, int64_t n) {
  Logits r;
  r.rows = n;
  r.vocab = l.vocab;
  r.data.assign(l.row(begin), l.row(begin) + n * l.vocab);
  return r;
}

nlohmann::json Interval(const std::vector<double>& v, int resamples) {
  const BootstrapInterval b = BootstrapMean(v, resamples);
  return {{"mean", b.mean}, {"ci95", {b.lo, b.hi}}, {"per_prompt", v}};
}

double Mean(const std::vector<double>& v) {
  return v.empty() ? std::nan("") : std::accumulate(v.begin(), v.end(), 0.0) / v.size();
}

absl::Status Run(const Config& c) {
  if (c.prompts < 0 || c.free_run < 0 || c.min_tokens < 1 || c.max_tokens < c.min_tokens) {
    return absl::InvalidArgumentError("bad --prompts/--free-run/--min-tokens/--max-tokens");
  }
  const int threads = c.threads > 0 ? static_cast<int>(c.threads)
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  KVS_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::Open(c.model));
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::FromGguf(gguf));
  KVS_ASSIGN_OR_RETURN(ChatTemplate tmpl, ChatTemplate::FromGguf(gguf));
  RunnerOptions ro;
  ro.threads = threads;
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(gguf, ro));
  const ModelConfig& mc = model->config();
  bool chat = false;
  if (c.chat == "on") {
    chat = true;
  } else if (c.chat == "auto") {
    chat = tmpl.style() != ChatTemplate::Style::kNone;
  } else if (c.chat != "off") {
    return absl::InvalidArgumentError("--chat must be auto, on or off");
  }

  CodecOptions copts;
  if (c.path == "reference") {
    copts.path = CodecPath::kReference;
  } else if (c.path != "fast") {
    return absl::InvalidArgumentError("--path must be fast or reference");
  }
  if (c.prune_fill == "zero") {
    copts.prune_fill = PruneFill::kZero;
  } else if (c.prune_fill != "mask") {
    return absl::InvalidArgumentError("--prune-fill must be mask or zero");
  }
  copts.fp8_compat = c.fp8_compat;
  CodecRegistry registry = CodecRegistry::Builtin();
  std::vector<std::string> names = c.codecs == "all"
                                       ? registry.Names()
                                       : std::vector<std::string>(absl::StrSplit(c.codecs, ',', absl::SkipEmpty()));
  std::vector<CodecRow> rows;
  std::vector<std::unique_ptr<Codec>> codecs;
  for (const std::string& n : names) {
    absl::StatusOr<std::unique_ptr<Codec>> codec = registry.Create(n, copts);
    if (codec.status().code() == absl::StatusCode::kNotFound) return codec.status();
    if (!codec.ok()) {  // e.g. a codec this build lacks: reported as unavailable
      rows.push_back({n, "", {}, std::string(codec.status().message())});
      codecs.push_back(nullptr);
      continue;
    }
    rows.push_back({n, std::string((*codec)->info().family), {}, ""});
    codecs.push_back(std::move(codec).value());
  }
  ThreadPool pool(threads);

  nlohmann::json report;
  report["model"] = {{"path", c.model}, {"config", mc.ToString()}};
  report["protocol"] = {{"text", c.text}, {"prompts", c.prompts}, {"chars", {4 * c.min_tokens, 4 * c.max_tokens}},
                        {"seed", c.seed}, {"chat", chat}, {"split", "80% prefix, >= 10 continuation tokens"},
                        {"free_run_tokens", c.free_run}, {"prune_fill", c.prune_fill},
                        {"codec_path", c.path}, {"mode", "whole (one request per encode)"},
                        {"bootstrap_resamples", c.bootstrap}};
  std::cerr << absl::StrFormat("kvs-bench quality: %s\n  %d threads, chat template %s, %d codecs\n",
                               mc.ToString(), threads, chat ? "on" : "off", rows.size());

  if (c.perplexity_windows > 0) {
    std::ifstream in(c.text, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = absl::StrReplaceAll(ss.str(), {{"\r\n", "\n"}});
    const std::vector<int32_t> ids = tok->Encode(text, {});
    const auto t0 = Clock::now();
    KVS_ASSIGN_OR_RETURN(WindowPerplexity ppl,
                         MeasureWindowPerplexity(*model, ids, c.window, c.perplexity_windows));
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::cout << absl::StrFormat(
        "perplexity of %s: %.3f over %d windows of %d tokens (%d scored tokens, %.1f s)\n", c.text,
        ppl.perplexity, ppl.windows, c.window, ppl.scored_tokens, secs);
    report["perplexity"] = {{"value", ppl.perplexity}, {"windows", ppl.windows}, {"window", c.window},
                            {"scored_tokens", ppl.scored_tokens}, {"per_window", ppl.per_window}};
  }

  if (c.prompts == 0) {  // perplexity only
    if (!c.json.empty()) {
      std::ofstream out(c.json == "-" ? "/dev/stdout" : c.json);
      out << report.dump(2) << "\n";
    }
    return absl::OkStatus();
  }
  KVS_ASSIGN_OR_RETURN(std::vector<std::string> prompts, DrawPrompts(c));
  nlohmann::json per_prompt = nlohmann::json::array();
  for (size_t pi = 0; pi < prompts.size(); ++pi) {
    const auto t0 = Clock::now();
    std::string text = prompts[pi];
    EncodeOptions eo;
    eo.add_bos = tok->add_bos_by_default();
    if (chat) {
      KVS_ASSIGN_OR_RETURN(text, tmpl.Apply({ChatMessage{"user", prompts[pi]}}, true));
      eo.parse_special = true;
    }
    const std::vector<int32_t> ids = tok->Encode(text, eo);
    const TeacherForcedSplit split = PaperSplit(static_cast<int64_t>(ids.size()));
    if (split.continuation < 2) return absl::InvalidArgumentError("prompt too short to split");
    const std::vector<int32_t> cont(ids.begin() + split.prefix, ids.end());

    KVS_ASSIGN_OR_RETURN(PrefillResult pre, model->Prefill(ids));
    const KvGeometry g = pre.cache.geometry();
    OwnedKv orig = OwnedKv::Zeros(g);
    KVS_RETURN_IF_ERROR(pre.cache.ExportF16(orig.mutable_view()));

    // Reconstructions: index 0 is the original (the reference), then one per working codec.
    std::vector<OwnedKv> recon;
    std::vector<std::vector<uint8_t>> masks = {{}};
    std::vector<size_t> which;  // rows[] index of each reconstruction after the reference
    std::vector<KvCacheView> views = {orig.view()};
    recon.reserve(codecs.size());
    for (size_t i = 0; i < codecs.size(); ++i) {
      if (!rows[i].error.empty()) continue;
      auto payload = EncodeToVector(*codecs[i], orig.view(), &pool);
      OwnedKv out = OwnedKv::Zeros(g);
      std::vector<uint8_t> keep(static_cast<size_t>(g.tokens), 1);
      absl::Status s = payload.status();
      if (s.ok()) s = DecodeFromVector(*codecs[i], *payload, out.mutable_view(), &pool, absl::MakeSpan(keep));
      if (!s.ok()) {
        rows[i].error = std::string(s.message());
        std::cerr << "  " << rows[i].name << ": " << s << " (left out)\n";
        continue;
      }
      const Fidelity f = MeasureFidelity(orig.view(), out.view());
      Series& se = rows[i].s;
      se.ratio.push_back(static_cast<double>(g.raw_bytes()) / static_cast<double>(payload->size()));
      se.key_cos.push_back(f.mean_key_cosine);
      se.val_cos.push_back(f.mean_value_cosine);
      se.key_mse.push_back(f.mean_key_mse);
      se.val_mse.push_back(f.mean_value_mse);
      // Zero-fill keeps every position attended (the reference's behaviour).
      if (copts.prune_fill == PruneFill::kZero) std::fill(keep.begin(), keep.end(), uint8_t{1});
      const int64_t evicted = std::count(keep.begin(), keep.end(), uint8_t{0});
      se.evicted.push_back(static_cast<double>(evicted) / static_cast<double>(g.tokens));
      masks.push_back(evicted > 0 ? keep : std::vector<uint8_t>{});
      recon.push_back(std::move(out));
      which.push_back(i);
    }
    for (const OwnedKv& r : recon) views.push_back(r.view());
    const int64_t B = static_cast<int64_t>(views.size());

    // Teacher forcing over the continuation from each reconstructed prefix, one batched pass.
    KVS_ASSIGN_OR_RETURN(KvCache full, model->ImportF16Batch(views, masks));
    KVS_ASSIGN_OR_RETURN(KvCache prefix, full.Prefix(split.prefix));
    KVS_ASSIGN_OR_RETURN(Logits scored, model->Score(prefix, cont));
    const int64_t m = split.continuation;
    const Logits ref = Rows(scored, 0, m);
    KVS_ASSIGN_OR_RETURN(double ref_ppl, Perplexity(ref, cont));
    for (int64_t b = 1; b < B; ++b) {
      const Logits mine = Rows(scored, b * m, m);
      KVS_ASSIGN_OR_RETURN(double ta, TokenAgreement(ref, mine));
      KVS_ASSIGN_OR_RETURN(double ppl, Perplexity(mine, cont));
      Series& se = rows[which[b - 1]].s;
      se.ta.push_back(ta);
      se.ppl.push_back(ppl);
      se.dppl.push_back(ppl - ref_ppl);
    }

    // Free-running greedy decode from each reconstructed full-prompt cache. The first token is
    // the prefill's (computed before the cache crossed the wire), identical for every row.
    std::vector<std::vector<int32_t>> gen(static_cast<size_t>(B));
    if (c.free_run > 0) {
      std::vector<int32_t> next(static_cast<size_t>(B), ArgMax(pre.last_logits));
      for (int64_t step = 0; step < c.free_run; ++step) {
        KVS_ASSIGN_OR_RETURN(Logits l, model->StepBatch(&full, next));
        for (int64_t b = 0; b < B; ++b) {
          next[b] = ArgMax(l.Row(b));
          gen[b].push_back(next[b]);
        }
      }
      for (int64_t b = 1; b < B; ++b) {
        const SequenceAgreement a = CompareSequences(gen[0], gen[b]);
        Series& se = rows[which[b - 1]].s;
        se.free_agree.push_back(a.fraction);
        se.first_div.push_back(static_cast<double>(a.first_divergence));
      }
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::cerr << absl::StrFormat("  prompt %d/%d: %d tokens (prefix %d, continuation %d), ppl %.2f, %.1f s\n",
                                 pi + 1, prompts.size(), ids.size(), split.prefix, m, ref_ppl, secs);
    per_prompt.push_back({{"chars", Utf8Chars(prompts[pi])}, {"tokens", ids.size()},
                          {"prefix", split.prefix}, {"continuation", m}, {"reference_ppl", ref_ppl},
                          {"reference_free_run", c.free_run > 0 ? tok->Decode(gen[0]) : ""}});
  }

  // Table.
  const int rs = static_cast<int>(c.bootstrap);
  auto ci = [&](const std::vector<double>& v, const char* fmt) {
    if (v.empty()) return std::string("-");
    const BootstrapInterval b = BootstrapMean(v, rs);
    return absl::StrFormat(fmt, b.mean, b.lo, b.hi);
  };
  std::cout << absl::StrFormat(
      "\n%s, %d WikiText prompts (%s), %s; TA/Δppl teacher-forced after an 80%% split, free-run = "
      "greedy agreement over %d tokens; mean [95%% bootstrap CI]\n\n",
      mc.name.empty() ? c.model : mc.name, prompts.size(), chat ? "chat-templated" : "raw",
      c.prune_fill == "mask" ? "pruned positions masked" : "pruned positions zero-filled",
      c.free_run);
  std::cout << absl::StrFormat("%-21s %6s %8s %8s %9s %9s  %-22s  %-28s  %-22s\n", "codec", "ratio",
                               "key cos", "val cos", "key MSE", "val MSE", "TA", "Δppl", "free-run agree");
  std::cout << std::string(150, '-') << "\n";
  nlohmann::json codecs_json = nlohmann::json::array();
  for (const CodecRow& r : rows) {
    if (!r.error.empty() && r.s.ratio.empty()) {
      std::cout << absl::StrFormat("%-21s unavailable: %s\n", r.name, r.error);
      codecs_json.push_back({{"codec", r.name}, {"error", r.error}});
      continue;
    }
    const Series& s = r.s;
    std::cout << absl::StrFormat("%-21s %6.3f %8.5f %8.5f %9.3g %9.3g  %-22s  %-28s  %-22s\n", r.name,
                                 Mean(s.ratio), Mean(s.key_cos), Mean(s.val_cos), Mean(s.key_mse),
                                 Mean(s.val_mse), ci(s.ta, "%.3f [%.3f, %.3f]"),
                                 ci(s.dppl, "%+.3f [%+.3f, %+.3f]"), ci(s.free_agree, "%.3f [%.3f, %.3f]"));
    nlohmann::json j = {{"codec", r.name},
                        {"family", r.family},
                        {"ratio", Interval(s.ratio, rs)},
                        {"key_cosine", Interval(s.key_cos, rs)},
                        {"value_cosine", Interval(s.val_cos, rs)},
                        {"key_mse", Interval(s.key_mse, rs)},
                        {"value_mse", Interval(s.val_mse, rs)},
                        {"token_agreement", Interval(s.ta, rs)},
                        {"ppl", Interval(s.ppl, rs)},
                        {"delta_ppl", Interval(s.dppl, rs)},
                        {"evicted_fraction", Interval(s.evicted, rs)}};
    if (!s.free_agree.empty()) {
      j["free_run_agreement"] = Interval(s.free_agree, rs);
      j["free_run_first_divergence"] = Interval(s.first_div, rs);
    }
    if (!r.error.empty()) j["error"] = r.error;
    codecs_json.push_back(j);
  }
  report["prompts"] = per_prompt;
  report["codecs"] = codecs_json;
  if (!c.json.empty()) {
    const std::string dump = report.dump(2);
    if (c.json == "-") {
      std::cout << dump << "\n";
    } else {
      std::ofstream out(c.json);
      out << dump << "\n";
      if (!out) return absl::UnavailableError("cannot write --json " + c.json);
      std::cerr << "json written to " << c.json << "\n";
    }
  }
  return absl::OkStatus();
}

}  // namespace

int RunQualityBench(int argc, char** argv) {
  Config c;
  ArgParser p("kvs-bench quality",
              "Token agreement, Δppl, free-run agreement, cosine and ratio per codec on a real "
              "model (CODECS.md §4).");
  p.AddString("model", &c.model, "GGUF model (scripts/fetch-models fetches SmolLM2-135M-Instruct)");
  p.AddString("text", &c.text, "text file the prompts are drawn from, one candidate per line");
  p.AddInt("prompts", &c.prompts, "number of prompts");
  p.AddInt("min-tokens", &c.min_tokens, "prompt filter: at least 4x this many characters");
  p.AddInt("max-tokens", &c.max_tokens, "prompt filter: at most 4x this many characters");
  p.AddInt("seed", &c.seed, "prompt draw seed");
  p.AddString("codecs", &c.codecs, "comma-separated codec names, or all");
  p.AddString("chat", &c.chat, "chat-template the prompts: auto (when the model has one), on, off");
  p.AddInt("free-run", &c.free_run, "greedy tokens generated from each reconstruction (0: skip)");
  p.AddString("prune-fill", &c.prune_fill, "pruned positions: mask (evict) or zero (the reference)");
  p.AddString("path", &c.path, "codec implementation: fast or reference");
  p.AddBool("fp8-compat", &c.fp8_compat, "fp8_e4m3 as the KVShuttle reference CPU path");
  p.AddInt("threads", &c.threads, "libtorch and codec threads; 0 = all hardware threads");
  p.AddInt("bootstrap", &c.bootstrap, "bootstrap resamples for the 95% intervals");
  p.AddInt("perplexity-windows", &c.perplexity_windows, "also report perplexity of --text over this many windows");
  p.AddInt("window", &c.window, "perplexity window in tokens");
  p.AddString("json", &c.json, "write the results as JSON to this file ('-' = stdout)");
  if (std::optional<int> rc = p.ParseForMain(argc, argv)) return *rc;
  if (absl::Status s = Run(c); !s.ok()) {
    std::cerr << "kvs-bench quality: " << s << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kvs::bench
