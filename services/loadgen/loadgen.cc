#include "services/loadgen/loadgen.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "common/status/status.h"
#include "nlohmann/json.hpp"

namespace kvs::loadgen {

void BindLoadgenOptions(config::ConfigTable& t, LoadgenOptions* o) {
  t.HostPort("target", &o->target, "kvs-prefill address");
  t.String("prompts_file", &o->prompts_file, "text file whose paragraphs become prompts");
  t.String("prompt_text", &o->prompt_text, "one prompt for every request (instead of prompts_file)");
  t.Int("prompt_words", &o->prompt_words, "words per prompt taken from each paragraph", 1, 100000);
  t.Int("prompt_tokens", &o->prompt_tokens,
        "fixed-length prompts of this many pseudo-random token ids (0 = text prompts)", 0, 1 << 24);
  t.Int("num_prompts", &o->num_prompts, "distinct prompts cycled through", 1, 1000000);
  t.Int("requests", &o->requests, "requests per codec (ignored when duration_s > 0)", 1, 100000000);
  t.Double("duration_s", &o->duration_s, "run each codec this long instead of a request count", 0, 1e6);
  t.Double("rate", &o->rate, "open loop: Poisson arrivals per second; 0 = closed loop", 0, 1e6);
  t.Int("concurrency", &o->concurrency, "requests outstanding at most (closed loop: the clients)", 1, 4096);
  t.StringList("codecs", &o->codecs, "codecs to compare (each run with the same prompts)");
  t.String("check_against", &o->check_against, "report token agreement with this codec's outputs");
  t.Double("min_ta", &o->min_ta, "auto: minimum measured token agreement of the chosen codec; 0 = unset", 0, 1);
  t.Int("quality_floor", &o->quality_floor, "auto: minimum quality class (0 any .. 3 lossless)", 0, 3);
  t.Int("max_new_tokens", &o->max_new_tokens, "tokens to generate per request", 1, 1 << 20);
  t.Double("temperature", &o->temperature, "sampling temperature; 0 = greedy", 0, 100);
  t.Int("seed", &o->seed, "sampling seed", 0, INT64_MAX);
  t.Bool("chat", &o->chat, "wrap prompts in the model's chat template");
  t.Int("timeout_ms", &o->timeout_ms, "per-request deadline", 1, 86400000);
  t.String("json", &o->json, "write the summary as JSON to this file (- = stdout)");
  t.String("save_outputs", &o->save_outputs, "write every generated text (JSON) to this file");
  t.Bool("progress", &o->progress, "progress bar on stderr");
  t.Bool("show_sample", &o->show_sample, "print the first prompt and each codec's text for it");
  t.Enum("log_level", &o->log_level, {"error", "warn", "info", "debug", "trace"}, "log level");
}

absl::Status ValidateLoadgenOptions(const LoadgenOptions& o) {
  if (o.codecs.empty()) return absl::InvalidArgumentError("codecs: give at least one codec");
  if (o.prompts_file.empty() && o.prompt_text.empty() && o.prompt_tokens == 0) {
    return absl::InvalidArgumentError("give prompts_file, prompt_text or prompt_tokens");
  }
  return absl::OkStatus();
}

std::string Prompt::Describe() const {
  if (!ids.empty()) return absl::StrCat("(", ids.size(), " pseudo-random token ids)");
  return text;
}

absl::StatusOr<std::vector<Prompt>> LoadPrompts(const LoadgenOptions& o, int64_t vocab_size) {
  std::vector<Prompt> prompts;
  if (o.prompt_tokens > 0) {
    if (vocab_size < 4) return absl::InvalidArgumentError("prompt_tokens needs the target's vocabulary size");
    std::mt19937_64 rng(static_cast<uint64_t>(o.seed) + 0x5eed);
    // Ids 0..2 are BOS/EOS/UNK in most vocabularies: start above them.
    std::uniform_int_distribution<int32_t> id(3, static_cast<int32_t>(vocab_size - 1));
    for (int64_t i = 0; i < o.num_prompts; ++i) {
      Prompt p;
      for (int64_t t = 0; t < o.prompt_tokens; ++t) p.ids.push_back(id(rng));
      prompts.push_back(std::move(p));
    }
    return prompts;
  }
  if (!o.prompt_text.empty()) return std::vector<Prompt>{Prompt{o.prompt_text, {}}};
  std::ifstream in(o.prompts_file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open prompts file ", o.prompts_file));
  std::string line;
  while (std::getline(in, line) && static_cast<int64_t>(prompts.size()) < o.num_prompts) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l.front() == '=') continue;  // blank lines and WikiText headings
    std::vector<absl::string_view> words = absl::StrSplit(l, ' ', absl::SkipEmpty());
    if (static_cast<int64_t>(words.size()) < std::min<int64_t>(8, o.prompt_words)) continue;
    if (static_cast<int64_t>(words.size()) > o.prompt_words) words.resize(static_cast<size_t>(o.prompt_words));
    prompts.push_back(Prompt{absl::StrJoin(words, " "), {}});
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat("no prompts in ", o.prompts_file));
  return prompts;
}

double TokenAgreement(const std::vector<int32_t>& ref, const std::vector<int32_t>& a) {
  const size_t n = std::max(ref.size(), a.size());
  if (n == 0) return 1.0;
  size_t same = 0;
  for (size_t i = 0; i < std::min(ref.size(), a.size()); ++i) same += ref[i] == a[i];
  return static_cast<double>(same) / static_cast<double>(n);
}

Percentiles ComputePercentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    // Nearest rank.
    size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
    return v[std::min(i, v.size() - 1)];
  };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / static_cast<double>(v.size());
  return p;
}

namespace {

using Clock = std::chrono::steady_clock;

RequestResult RunOne(const LoadgenOptions& o, const std::string& codec, const std::vector<Prompt>& prompts,
                     int64_t index, control::PrefillApi& client, Clock::time_point issued) {
  RequestResult r;
  r.prompt_index = index % static_cast<int64_t>(prompts.size());
  control::GenerateParams p;
  p.request_id = absl::StrCat("loadgen-", codec, "-", index);
  const Prompt& prompt = prompts[static_cast<size_t>(r.prompt_index)];
  p.prompt = prompt.text;
  p.prompt_token_ids = prompt.ids;
  p.max_new_tokens = static_cast<int32_t>(o.max_new_tokens);
  p.sampling.temperature = static_cast<float>(o.temperature);
  p.sampling.seed = static_cast<uint64_t>(o.seed);
  p.codec = codec;
  p.min_token_agreement = o.min_ta;
  p.quality_floor = static_cast<int32_t>(o.quality_floor);
  p.chat = o.chat && prompt.ids.empty();
  control::TokenSink sink = [&r](const control::TokenPiece& t) {
    r.tokens.push_back(t.token_id);
    r.text += t.text;
    return absl::OkStatus();
  };
  absl::StatusOr<control::RequestStats> st =
      client.Generate(p, sink, absl::Now() + absl::Milliseconds(o.timeout_ms));
  r.latency_ms = std::chrono::duration<double, std::milli>(Clock::now() - issued).count();
  if (st.ok()) {
    r.stats = *st;
  } else {
    r.status = st.status();
  }
  return r;
}

// Runs one codec's requests; results in completion order.
std::vector<RequestResult> RunCodec(const LoadgenOptions& o, const std::string& codec,
                                    const std::vector<Prompt>& prompts, control::PrefillApi& client,
                                    const ProgressFn& progress, double* wall_s) {
  std::mutex mu;
  std::vector<RequestResult> results;
  std::atomic<int64_t> done{0};
  const bool timed = o.duration_s > 0;
  const int64_t total = timed ? 0 : o.requests;
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));
  auto record = [&](RequestResult r) {
    std::lock_guard<std::mutex> l(mu);
    results.push_back(std::move(r));
    const int64_t d = done.fetch_add(1) + 1;
    if (progress) progress(codec, d, total);
  };

  if (o.rate <= 0) {
    // Closed loop: `concurrency` clients, each issuing its next request when the last returns.
    std::atomic<int64_t> next{0};
    std::vector<std::thread> clients;
    for (int64_t c = 0; c < o.concurrency; ++c) {
      clients.emplace_back([&] {
        while (true) {
          if (timed && Clock::now() >= end) return;
          const int64_t i = next.fetch_add(1);
          if (!timed && i >= o.requests) return;
          record(RunOne(o, codec, prompts, i, client, Clock::now()));
        }
      });
    }
    for (std::thread& t : clients) t.join();
  } else {
    // Open loop: Poisson arrivals; a request waits in the queue while `concurrency` are running,
    // and its latency counts from its arrival.
    std::mutex qmu;
    std::condition_variable qcv;
    std::deque<std::pair<int64_t, Clock::time_point>> queue;
    bool closed = false;
    std::vector<std::thread> workers;
    for (int64_t c = 0; c < o.concurrency; ++c) {
      workers.emplace_back([&] {
        while (true) {
          std::pair<int64_t, Clock::time_point> item;
          {
            std::unique_lock<std::mutex> l(qmu);
            qcv.wait(l, [&] { return closed || !queue.empty(); });
            if (queue.empty()) return;
            item = queue.front();
            queue.pop_front();
          }
          record(RunOne(o, codec, prompts, item.first, client, item.second));
        }
      });
    }
    std::mt19937_64 rng(static_cast<uint64_t>(o.seed) * 7919 + 17);
    std::exponential_distribution<double> gap(o.rate);
    Clock::time_point t = start;
    for (int64_t i = 0;; ++i) {
      if (!timed && i >= o.requests) break;
      t += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
      if (timed && t >= end) break;
      std::this_thread::sleep_until(t);  // pacing the arrivals is the point of an open loop
      {
        std::lock_guard<std::mutex> l(qmu);
        queue.emplace_back(i, t);
      }
      qcv.notify_one();
    }
    {
      std::lock_guard<std::mutex> l(qmu);
      closed = true;
    }
    qcv.notify_all();
    for (std::thread& w : workers) w.join();
  }
  *wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  return results;
}

CodecSummary Summarize(const std::string& codec, std::vector<RequestResult> results, double wall_s) {
  CodecSummary s;
  s.codec = codec;
  s.wall_s = wall_s;
  std::vector<double> ttft, handoff, tpot, latency;
  double raw = 0, wire = 0, tokens = 0, prefill = 0, encode = 0, wire_ms = 0, decompress = 0, predicted = 0;
  int64_t ok = 0;
  for (const RequestResult& r : results) {
    ++s.requests;
    if (!r.status.ok()) {
      ++s.errors;
      std::string msg = r.status.ToString();
      if (s.error_samples.size() < 3 &&
          std::find(s.error_samples.begin(), s.error_samples.end(), msg) == s.error_samples.end()) {
        s.error_samples.push_back(msg);
      }
      continue;
    }
    ++ok;
    ttft.push_back(r.stats.ttft_ms);
    handoff.push_back(r.stats.handoff_ms);
    if (r.stats.generated_tokens > 1) tpot.push_back(r.stats.tpot_ms);
    latency.push_back(r.latency_ms);
    raw += static_cast<double>(r.stats.raw_bytes);
    wire += static_cast<double>(r.stats.wire_bytes);
    tokens += static_cast<double>(r.stats.generated_tokens);
    prefill += r.stats.prefill_ms;
    encode += r.stats.encode_ms;
    wire_ms += r.stats.wire_ms;
    decompress += r.stats.decompress_ms;
    predicted += r.stats.predicted_handoff_ms;
    if (s.transport.empty()) s.transport = r.stats.transport;
    ++s.resolved[r.stats.codec];
  }
  s.ttft_ms = ComputePercentiles(ttft);
  s.handoff_ms = ComputePercentiles(handoff);
  s.tpot_ms = ComputePercentiles(tpot);
  s.latency_ms = ComputePercentiles(latency);
  if (ok > 0) {
    s.raw_bytes_mean = raw / static_cast<double>(ok);
    s.wire_bytes_mean = wire / static_cast<double>(ok);
    s.ratio = wire > 0 ? raw / wire : 0;
    const double n = static_cast<double>(ok);
    s.prefill_ms_mean = prefill / n;
    s.encode_ms_mean = encode / n;
    s.wire_ms_mean = wire_ms / n;
    s.decompress_ms_mean = decompress / n;
    s.predicted_handoff_ms_mean = predicted / n;
  }
  s.throughput_rps = wall_s > 0 ? static_cast<double>(ok) / wall_s : 0;
  s.tokens_per_s = wall_s > 0 ? tokens / wall_s : 0;
  std::sort(results.begin(), results.end(),
            [](const RequestResult& a, const RequestResult& b) { return a.prompt_index < b.prompt_index; });
  s.results = std::move(results);
  return s;
}

}  // namespace

absl::StatusOr<LoadgenReport> RunLoadgen(const LoadgenOptions& o, const std::vector<Prompt>& prompts,
                                         control::PrefillApi& client, const ProgressFn& progress) {
  KVS_RETURN_IF_ERROR(ValidateLoadgenOptions(o));
  if (prompts.empty()) return absl::InvalidArgumentError("no prompts");
  LoadgenReport report;
  report.target = client.target();
  report.mode = o.rate > 0 ? absl::StrFormat("open loop, Poisson %.2f req/s, at most %d outstanding", o.rate, o.concurrency)
                           : absl::StrFormat("closed loop, concurrency %d", o.concurrency);
  std::vector<std::string> order = o.codecs;
  if (!o.check_against.empty()) {
    auto it = std::find(order.begin(), order.end(), o.check_against);
    if (it != order.end()) {
      order.erase(it);
    }
    order.insert(order.begin(), o.check_against);  // the reference runs first
  }
  for (const std::string& codec : order) {
    double wall = 0;
    std::vector<RequestResult> results = RunCodec(o, codec, prompts, client, progress, &wall);
    report.codecs.push_back(Summarize(codec, std::move(results), wall));
  }
  if (!o.check_against.empty()) {
    const CodecSummary& ref = report.codecs.front();
    std::map<int64_t, const std::vector<int32_t>*> ref_tokens;
    for (const RequestResult& r : ref.results) {
      if (r.status.ok() && !ref_tokens.count(r.prompt_index)) ref_tokens[r.prompt_index] = &r.tokens;
    }
    for (CodecSummary& s : report.codecs) {
      double sum = 0, exact = 0;
      int64_t n = 0;
      for (const RequestResult& r : s.results) {
        auto it = ref_tokens.find(r.prompt_index);
        if (!r.status.ok() || it == ref_tokens.end()) continue;
        const double a = TokenAgreement(*it->second, r.tokens);
        sum += a;
        exact += (*it->second == r.tokens) ? 1 : 0;
        ++n;
      }
      if (n > 0) {
        s.has_agreement = true;
        s.token_agreement = sum / static_cast<double>(n);
        s.exact_match = exact / static_cast<double>(n);
      }
    }
    // Report in the order asked for (the reference only when it was asked for).
    std::vector<CodecSummary> ordered;
    std::vector<bool> used(report.codecs.size(), false);
    for (const std::string& c : o.codecs) {
      for (size_t i = 0; i < report.codecs.size(); ++i) {
        if (!used[i] && report.codecs[i].codec == c) {
          used[i] = true;
          ordered.push_back(std::move(report.codecs[i]));
          break;
        }
      }
    }
    report.codecs = std::move(ordered);
  }
  return report;
}

std::string FormatTable(const LoadgenReport& r) {
  std::string out = absl::StrFormat("kvs-loadgen against %s (%s)\n", r.target, r.mode);
  absl::StrAppend(&out, absl::StrFormat("%-22s %5s %4s %7s %8s %23s %23s %17s %9s %6s %8s\n", "codec", "req",
                                        "err", "req/s", "tok/s", "TTFT ms p50/p90/p99",
                                        "handoff ms p50/p90/p99", "TPOT ms p50/p99", "wire KiB", "ratio",
                                        "agree"));
  for (const CodecSummary& s : r.codecs) {
    absl::StrAppend(&out, absl::StrFormat(
                              "%-22s %5d %4d %7.2f %8.1f %7.2f/%7.2f/%7.2f %7.3f/%7.3f/%7.3f %8.3f/%8.3f %9.1f %6.2f %8s\n",
                              s.codec, s.requests, s.errors, s.throughput_rps, s.tokens_per_s, s.ttft_ms.p50,
                              s.ttft_ms.p90, s.ttft_ms.p99, s.handoff_ms.p50, s.handoff_ms.p90, s.handoff_ms.p99,
                              s.tpot_ms.p50, s.tpot_ms.p99, s.wire_bytes_mean / 1024.0, s.ratio,
                              s.has_agreement ? absl::StrFormat("%.3f", s.token_agreement) : std::string("-")));
  }
  absl::StrAppend(&out, absl::StrFormat("\n%-22s %10s %10s %10s %12s %12s %13s %14s\n", "stage means (ms)", "prefill",
                                        "encode", "wire", "decompress", "handoff p50", "handoff mean", "predicted"));
  for (const CodecSummary& s : r.codecs) {
    absl::StrAppend(&out, absl::StrFormat("%-22s %10.3f %10.3f %10.3f %12.3f %12.3f %13.3f %14.3f\n", s.codec,
                                          s.prefill_ms_mean, s.encode_ms_mean, s.wire_ms_mean,
                                          s.decompress_ms_mean, s.handoff_ms.p50, s.handoff_ms.mean,
                                          s.predicted_handoff_ms_mean));
  }
  // What a policy codec ("auto") resolved to, per request.
  for (const CodecSummary& s : r.codecs) {
    if (s.resolved.empty() || (s.resolved.size() == 1 && s.resolved.begin()->first == s.codec)) continue;
    std::vector<std::string> parts;
    for (const auto& [name, n] : s.resolved) parts.push_back(absl::StrCat(name, " ", n));
    absl::StrAppend(&out, s.codec, " resolved to: ", absl::StrJoin(parts, ", "), "\n");
  }
  for (const CodecSummary& s : r.codecs) {
    for (const std::string& e : s.error_samples) absl::StrAppend(&out, "  ", s.codec, " error: ", e, "\n");
  }
  if (!r.codecs.empty() && !r.codecs.front().transport.empty()) {
    absl::StrAppend(&out, "transport: ", r.codecs.front().transport, "\n");
  }
  return out;
}

std::string ToJson(const LoadgenReport& r, bool with_outputs) {
  nlohmann::json j;
  j["target"] = r.target;
  j["mode"] = r.mode;
  j["codecs"] = nlohmann::json::array();
  for (const CodecSummary& s : r.codecs) {
    nlohmann::json c;
    c["codec"] = s.codec;
    c["requests"] = s.requests;
    c["errors"] = s.errors;
    c["error_samples"] = s.error_samples;
    c["wall_s"] = s.wall_s;
    c["throughput_rps"] = s.throughput_rps;
    c["tokens_per_s"] = s.tokens_per_s;
    c["ttft_ms_p50"] = s.ttft_ms.p50;
    c["ttft_ms_p90"] = s.ttft_ms.p90;
    c["ttft_ms_p99"] = s.ttft_ms.p99;
    c["handoff_ms_p50"] = s.handoff_ms.p50;
    c["handoff_ms_p90"] = s.handoff_ms.p90;
    c["handoff_ms_p99"] = s.handoff_ms.p99;
    c["handoff_ms_mean"] = s.handoff_ms.mean;
    c["resolved"] = s.resolved;
    c["tpot_ms_p50"] = s.tpot_ms.p50;
    c["tpot_ms_p99"] = s.tpot_ms.p99;
    c["latency_ms_p50"] = s.latency_ms.p50;
    c["latency_ms_p99"] = s.latency_ms.p99;
    c["prefill_ms_mean"] = s.prefill_ms_mean;
    c["encode_ms_mean"] = s.encode_ms_mean;
    c["wire_ms_mean"] = s.wire_ms_mean;
    c["decompress_ms_mean"] = s.decompress_ms_mean;
    c["predicted_handoff_ms_mean"] = s.predicted_handoff_ms_mean;
    c["raw_bytes_mean"] = s.raw_bytes_mean;
    c["wire_bytes_mean"] = s.wire_bytes_mean;
    c["ratio"] = s.ratio;
    c["transport"] = s.transport;
    if (s.has_agreement) {
      c["token_agreement"] = s.token_agreement;
      c["exact_match"] = s.exact_match;
    } else {
      c["token_agreement"] = nullptr;
    }
    if (with_outputs) {
      nlohmann::json outs = nlohmann::json::array();
      for (const RequestResult& res : s.results) {
        nlohmann::json o;
        o["prompt_index"] = res.prompt_index;
        o["ok"] = res.status.ok();
        o["text"] = res.text;
        o["tokens"] = res.tokens;
        if (!res.status.ok()) o["error"] = res.status.ToString();
        outs.push_back(o);
      }
      c["outputs"] = outs;
    }
    j["codecs"].push_back(c);
  }
  // Generated text may hold partial UTF-8 pieces: replace rather than throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kvs::loadgen
