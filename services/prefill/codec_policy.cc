#include "services/prefill/codec_policy.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log/log.h"
#include "common/status/status.h"
#include "common/synth/synthetic_kv.h"

namespace kvs::prefill {

int QualityClass(absl::string_view c) {
  if (c == "identity" || c == "lossless_zstd" || c == "lossless_lz4") return 3;
  if (c == "uniform_int8" || c == "fp8_e4m3" || c == "mixed_k8v4") return 2;
  if (c == "uniform_int4" || c == "cachegen" || c == "palu_int4") return 1;
  return 0;
}

CodecPolicy::CodecPolicy(std::vector<CodecProfile> profiles, double initial_gbps)
    : profiles_(std::move(profiles)), initial_gbps_(initial_gbps) {}

absl::StatusOr<std::unique_ptr<CodecPolicy>> CodecPolicy::Calibrate(
    const CodecRegistry& registry, const std::vector<std::string>& candidates,
    const KvGeometry& chunk, ThreadPool* pool, double initial_gbps) {
  using Clock = std::chrono::steady_clock;
  OwnedKv kv = MakeSyntheticKv(chunk, /*seed=*/7);
  OwnedKv out = OwnedKv::Zeros(chunk);
  const double raw_bits = 8.0 * static_cast<double>(chunk.raw_bytes());
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
    // One warm-up, then the best of three (first touch and caches out of the way).
    double enc_s = 1e30, dec_s = 1e30;
    size_t n = 0;
    absl::Status st;
    for (int rep = 0; rep < 4 && st.ok(); ++rep) {
      auto t0 = Clock::now();
      absl::StatusOr<size_t> e = (*codec)->Encode(kv.view(), absl::MakeSpan(payload), absl::MakeSpan(ws), pool);
      auto t1 = Clock::now();
      if (!e.ok()) {
        st = e.status();
        break;
      }
      n = *e;
      st = (*codec)->Decode(absl::MakeConstSpan(payload.data(), n), out.mutable_view(), absl::MakeSpan(ws), pool);
      auto t2 = Clock::now();
      if (rep > 0) {
        enc_s = std::min(enc_s, std::chrono::duration<double>(t1 - t0).count());
        dec_s = std::min(dec_s, std::chrono::duration<double>(t2 - t1).count());
      }
    }
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
    KVS_LOG_INFO("auto policy: {} ratio {:.2f}, encode {:.2f} Gbit/s, decode {:.2f} Gbit/s, quality class {}",
                 name, p.ratio, p.encode_gbps, p.decode_gbps, p.quality);
    profiles.push_back(p);
  }
  if (profiles.empty()) {
    return absl::FailedPreconditionError("auto policy: no candidate codec works on this build");
  }
  return std::make_unique<CodecPolicy>(std::move(profiles), initial_gbps);
}

void CodecPolicy::ObserveLink(const std::string& peer, double gbps) {
  if (!(gbps > 0)) return;
  std::lock_guard<std::mutex> l(mu_);
  auto it = link_gbps_.find(peer);
  if (it == link_gbps_.end()) {
    link_gbps_[peer] = gbps;
  } else {
    it->second = 0.7 * it->second + 0.3 * gbps;
  }
}

double CodecPolicy::LinkGbps(const std::string& peer) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = link_gbps_.find(peer);
  return it == link_gbps_.end() ? initial_gbps_ : it->second;
}

absl::StatusOr<CodecPolicy::Choice> CodecPolicy::Choose(const std::string& peer,
                                                       int64_t chunk_raw_bytes, int64_t chunks,
                                                       int quality_floor) const {
  if (quality_floor < 0 || quality_floor > 3) {
    return absl::InvalidArgumentError(absl::StrCat("quality_floor ", quality_floor, " is outside [0, 3]"));
  }
  const double link = LinkGbps(peer);
  const double bits = 8.0 * static_cast<double>(chunk_raw_bytes);
  const CodecProfile* best = nullptr;
  double best_ms = 0;
  for (const CodecProfile& p : profiles_) {
    if (p.quality < quality_floor) continue;
    const double c = bits / (p.encode_gbps * 1e9) * 1e3;
    const double x = bits / p.ratio / (link * 1e9) * 1e3;
    const double d = bits / (p.decode_gbps * 1e9) * 1e3;
    const double ms = (c + x + d) + static_cast<double>(std::max<int64_t>(0, chunks - 1)) * std::max({c, x, d});
    if (best == nullptr || ms < best_ms) {
      best = &p;
      best_ms = ms;
    }
  }
  if (best == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("auto: no candidate codec meets quality floor ", quality_floor));
  }
  Choice ch;
  ch.codec = best->name;
  ch.predicted_ms = best_ms;
  ch.reason = absl::StrFormat(
      "auto: %s predicted %.3f ms (ratio %.2f, encode %.1f / decode %.1f Gbit/s, link %.2f Gbit/s to %s, "
      "quality class %d >= floor %d)",
      best->name, best_ms, best->ratio, best->encode_gbps, best->decode_gbps, link, peer, best->quality,
      quality_floor);
  return ch;
}

}  // namespace kvs::prefill
