#include "services/prefill/codec_policy.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "common/synth/synthetic_kv.h"
#include "services/transfer/crc32c.h"

namespace kvs::prefill {

int QualityClass(absl::string_view c) {
  if (c == "identity" || c == "lossless_zstd" || c == "lossless_lz4") return 3;
  if (c == "uniform_int8" || c == "fp8_e4m3" || c == "mixed_k8v4") return 2;
  if (c == "uniform_int4" || c == "cachegen" || c == "palu_int4") return 1;
  return 0;
}

namespace {

bool IsFraction(const nlohmann::json& v) {
  return v.is_number() && std::isfinite(v.get<double>()) && v.get<double>() >= 0 && v.get<double>() <= 1;
}

}  // namespace

absl::StatusOr<QualityTable> QualityTable::Parse(absl::string_view text, const std::string& source) {
  const nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("quality file ", source, ": ", what));
  };
  if (j.is_discarded()) return bad("not valid JSON");
  if (!j.is_object()) return bad("the top level is not a JSON object");
  QualityTable t;
  t.source_ = source;
  if (j.contains("model")) {
    const nlohmann::json& m = j["model"];
    if (!m.is_object() || (m.contains("path") && !m["path"].is_string())) {
      return bad("\"model\" must be an object with a string \"path\"");
    }
    if (m.contains("path")) t.model_ = m["path"].get<std::string>();
  }
  if (!j.contains("codecs") || !j["codecs"].is_array()) return bad("no \"codecs\" array");
  const nlohmann::json& codecs = j["codecs"];
  for (size_t i = 0; i < codecs.size(); ++i) {
    const nlohmann::json& c = codecs[i];
    const std::string at = absl::StrCat("codecs[", i, "]");
    if (!c.is_object() || !c.contains("codec") || !c["codec"].is_string() || c["codec"].get<std::string>().empty()) {
      return bad(absl::StrCat(at, ": needs a non-empty string \"codec\""));
    }
    const std::string name = c["codec"].get<std::string>();
    const std::string where = absl::StrCat(at, " (", name, ")");
    if (!c.contains("token_agreement")) {
      if (c.contains("error")) continue;  // unavailable in that run
      return bad(absl::StrCat(where, ": no \"token_agreement\""));
    }
    const nlohmann::json& ta = c["token_agreement"];
    if (!ta.is_object() || !ta.contains("mean") || !IsFraction(ta["mean"])) {
      return bad(absl::StrCat(where, ": token_agreement.mean must be a number in [0, 1]"));
    }
    CodecQuality q;
    q.ta_mean = ta["mean"].get<double>();
    if (ta.contains("ci95")) {
      const nlohmann::json& ci = ta["ci95"];
      if (!ci.is_array() || ci.size() != 2 || !IsFraction(ci[0]) || !IsFraction(ci[1]) ||
          ci[0].get<double>() > ci[1].get<double>()) {
        return bad(absl::StrCat(where, ": token_agreement.ci95 must be [low, high] in [0, 1]"));
      }
      q.ta_ci_low = ci[0].get<double>();
    }
    if (!t.codecs_.emplace(name, q).second) return bad(absl::StrCat(where, ": listed twice"));
  }
  if (t.codecs_.empty()) return bad("no codec with a token_agreement");
  return t;
}

absl::StatusOr<QualityTable> QualityTable::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("quality file ", path, ": cannot be read"));
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

std::optional<CodecQuality> QualityTable::Find(absl::string_view codec) const {
  auto it = codecs_.find(codec);
  if (it == codecs_.end()) return std::nullopt;
  return it->second;
}

CodecPolicy::CodecPolicy(std::vector<CodecProfile> profiles, double initial_gbps, std::string quality_source)
    : profiles_(std::move(profiles)), initial_gbps_(initial_gbps), quality_source_(std::move(quality_source)) {}

absl::StatusOr<std::unique_ptr<CodecPolicy>> CodecPolicy::Calibrate(
    const CodecRegistry& registry, const std::vector<std::string>& candidates,
    const KvGeometry& chunk, ThreadPool* pool, double initial_gbps, const QualityTable* quality) {
  using Clock = std::chrono::steady_clock;
  OwnedKv kv = MakeSyntheticKv(chunk, /*seed=*/7);
  OwnedKv out = OwnedKv::Zeros(chunk);
  const double raw_bits = 8.0 * static_cast<double>(chunk.raw_bytes());
  const std::string source =
      quality != nullptr ? absl::StrCat(quality->source(), " (TA: lower 95% CI bound, else mean)") : "fixed classes";
  std::vector<CodecProfile> profiles;
  for (const std::string& name : candidates) {
    absl::StatusOr<std::unique_ptr<Codec>> codec = registry.Create(name);
    if (!codec.ok()) {
      KVS_LOG_WARN("auto policy: codec {} unavailable: {}", name, codec.status().ToString());
      continue;
    }
    absl::StatusOr<size_t> cap = (*codec)->MaxEncodedBytes(chunk);
    if (!cap.ok()) {
      KVS_LOG_WARN("auto policy: codec {} cannot encode {}: {}", name, chunk.ToString(), cap.status().ToString());
      continue;
    }
    std::vector<uint8_t> payload(*cap), ws((*codec)->WorkspaceBytes(chunk, pool));
    // One warm-up, then the best of three (first touch and caches out of the way). Encode and
    // decode include the payload CRC, as the sender's and receiver's stages do.
    double enc_s = 1e30, dec_s = 1e30;
    size_t n = 0;
    absl::Status st;
    uint32_t crc_sink = 0;
    for (int rep = 0; rep < 4 && st.ok(); ++rep) {
      auto t0 = Clock::now();
      absl::StatusOr<size_t> e = (*codec)->Encode(kv.view(), absl::MakeSpan(payload), absl::MakeSpan(ws), pool);
      if (e.ok()) crc_sink ^= transfer::Crc32c(payload.data(), *e);
      auto t1 = Clock::now();
      if (!e.ok()) {
        st = e.status();
        break;
      }
      n = *e;
      crc_sink ^= transfer::Crc32c(payload.data(), n);
      st = (*codec)->Decode(absl::MakeConstSpan(payload.data(), n), out.mutable_view(), absl::MakeSpan(ws), pool);
      auto t2 = Clock::now();
      if (rep > 0) {
        enc_s = std::min(enc_s, std::chrono::duration<double>(t1 - t0).count());
        dec_s = std::min(dec_s, std::chrono::duration<double>(t2 - t1).count());
      }
    }
    (void)crc_sink;
    if (!st.ok()) {
      KVS_LOG_WARN("auto policy: codec {} failed its self-benchmark: {}", name, st.ToString());
      continue;
    }
    CodecProfile p;
    p.name = name;
    p.quality = QualityClass(name);
    p.ratio = static_cast<double>(chunk.raw_bytes()) / static_cast<double>(std::max<size_t>(1, n));
    p.encode_gbps = raw_bits / std::max(enc_s, 1e-9) / 1e9;
    p.decode_gbps = raw_bits / std::max(dec_s, 1e-9) / 1e9;
    if (quality != nullptr) {
      if (std::optional<CodecQuality> q = quality->Find(name)) p.token_agreement = q->ta();
    }
    KVS_LOG_INFO("auto policy: {} ratio {:.2f}, encode {:.2f} Gbit/s, decode {:.2f} Gbit/s ({} codec threads), "
                 "quality class {}, TA {}",
                 name, p.ratio, p.encode_gbps, p.decode_gbps, pool != nullptr ? pool->size() : 1, p.quality,
                 p.token_agreement >= 0 ? absl::StrFormat("%.3f", p.token_agreement) : std::string("not measured"));
    profiles.push_back(p);
  }
  if (profiles.empty()) {
    return absl::FailedPreconditionError("auto policy: no candidate codec works on this build");
  }
  return std::make_unique<CodecPolicy>(std::move(profiles), initial_gbps, source);
}

void CodecPolicy::ObserveLink(const std::string& peer, double gbps) {
  if (!(gbps > 0) || !std::isfinite(gbps)) return;
  std::lock_guard<std::mutex> l(mu_);
  Link& link = links_[peer];
  link.gbps = link.observations == 0 ? gbps : 0.7 * link.gbps + 0.3 * gbps;
  ++link.observations;
}

double CodecPolicy::LinkGbps(const std::string& peer) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = links_.find(peer);
  return it == links_.end() ? initial_gbps_ : it->second.gbps;
}

int64_t CodecPolicy::LinkObservations(const std::string& peer) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = links_.find(peer);
  return it == links_.end() ? 0 : it->second.observations;
}

void CodecPolicy::ObserveCodec(const std::string& codec, double raw_bytes, double encode_ms, double decode_ms) {
  if (!(raw_bytes > 0) || !std::isfinite(raw_bytes)) return;
  auto ewma = [](double* v, int64_t* n, double x) {
    *v = *n == 0 ? x : 0.7 * *v + 0.3 * x;
    ++*n;
  };
  std::lock_guard<std::mutex> l(mu_);
  Speeds& s = measured_[codec];
  if (encode_ms > 0 && std::isfinite(encode_ms)) {
    ewma(&s.encode_gbps, &s.encode_observations, 8.0 * raw_bytes / (encode_ms * 1e6));
  }
  if (decode_ms > 0 && std::isfinite(decode_ms)) {
    ewma(&s.decode_gbps, &s.decode_observations, 8.0 * raw_bytes / (decode_ms * 1e6));
  }
}

CodecPolicy::Speeds CodecPolicy::CodecSpeeds(const std::string& codec) const {
  Speeds s;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = measured_.find(codec);
    if (it != measured_.end()) s = it->second;
  }
  for (const CodecProfile& p : profiles_) {
    if (p.name != codec) continue;
    if (s.encode_observations == 0) s.encode_gbps = p.encode_gbps;
    if (s.decode_observations == 0) s.decode_gbps = p.decode_gbps;
  }
  return s;
}

absl::StatusOr<CodecPolicy::Choice> CodecPolicy::Choose(const std::string& peer, int64_t chunk_raw_bytes,
                                                       int64_t chunks, const QualityFloor& floor,
                                                       bool pipelined) const {
  if (floor.quality_class < 0 || floor.quality_class > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("quality_floor ", floor.quality_class, " is outside [0, 3]"));
  }
  if (!(floor.min_token_agreement >= 0 && floor.min_token_agreement <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_token_agreement ", floor.min_token_agreement, " is outside [0, 1]"));
  }
  const int64_t observations = LinkObservations(peer);
  const double link = LinkGbps(peer);
  const double bits = 8.0 * static_cast<double>(chunk_raw_bytes);
  const double n = static_cast<double>(std::max<int64_t>(1, chunks));
  Choice ch;
  ch.link_gbps = link;
  std::vector<std::string> excluded;
  for (const CodecProfile& p : profiles_) {
    if (p.quality < floor.quality_class) {
      excluded.push_back(absl::StrFormat("%s class %d", p.name, p.quality));
      continue;
    }
    if (floor.min_token_agreement > 0) {
      const double ta = p.token_agreement >= 0 ? p.token_agreement : (p.quality == 3 ? 1.0 : -1.0);
      if (ta < floor.min_token_agreement) {
        excluded.push_back(ta < 0 ? absl::StrCat(p.name, " TA not measured")
                                   : absl::StrFormat("%s TA %.3f", p.name, ta));
        continue;
      }
    }
    const Speeds sp = CodecSpeeds(p.name);
    const double c = bits / (sp.encode_gbps * 1e9) * 1e3;
    const double x = bits / p.ratio / (link * 1e9) * 1e3;
    const double d = bits / (sp.decode_gbps * 1e9) * 1e3;
    const double ms = pipelined ? (c + x + d) + (n - 1) * std::max({c, x, d}) : n * (c + x + d);
    ch.ranked.push_back({p.name, ms});
  }
  std::string floor_text = absl::StrCat("quality floor ", floor.quality_class);
  if (floor.min_token_agreement > 0) {
    absl::StrAppend(&floor_text, absl::StrFormat(", min TA %.3f (%s)", floor.min_token_agreement, quality_source_));
  }
  if (ch.ranked.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("auto: no candidate codec meets ", floor_text, " (",
                                                      absl::StrJoin(excluded, ", "), ")"));
  }
  std::stable_sort(ch.ranked.begin(), ch.ranked.end(),
                   [](const Candidate& a, const Candidate& b) { return a.predicted_ms < b.predicted_ms; });
  ch.codec = ch.ranked.front().codec;
  ch.predicted_ms = ch.ranked.front().predicted_ms;
  std::vector<std::string> top;
  for (size_t i = 0; i < ch.ranked.size() && i < 4; ++i) {
    top.push_back(absl::StrFormat("%s %.3f", ch.ranked[i].codec, ch.ranked[i].predicted_ms));
  }
  const CodecProfile& best = *std::find_if(profiles_.begin(), profiles_.end(),
                                           [&](const CodecProfile& p) { return p.name == ch.codec; });
  const Speeds sp = CodecSpeeds(best.name);
  ch.reason = absl::StrFormat(
      "auto: %s; predicted %s handoff ms: %s; link %.3f Gbit/s to %s (%s); %s (ratio %.2f, encode %.1f / decode "
      "%.1f Gbit/s, %s); %s%s",
      ch.codec, pipelined ? "pipelined" : "sequential", absl::StrJoin(top, " < "), link, peer,
      observations > 0 ? absl::StrCat("EWMA of ", observations, " transfers") : std::string("prior, none measured"),
      ch.codec, best.ratio, sp.encode_gbps, sp.decode_gbps,
      sp.encode_observations > 0 ? absl::StrCat("measured in ", sp.encode_observations, " transfers")
                                 : std::string("calibrated"),
      floor_text,
      excluded.empty() ? "" : absl::StrCat("; excluded: ", absl::StrJoin(excluded, ", ")));
  return ch;
}

}  // namespace kvs::prefill
