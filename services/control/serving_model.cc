#include "services/control/serving_model.h"

#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status.h"
#include "services/runner/gguf.h"

namespace kvs::control {

absl::StatusOr<std::string> FileFingerprint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("sha256: cannot initialise");
  }
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::streamsize n = in.gcount();
    if (n > 0) EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1 || len < 16) {
    return absl::InternalError("sha256: cannot finish");
  }
  std::string hex;
  for (int i = 0; i < 16; ++i) absl::StrAppendFormat(&hex, "%02x", md[i]);
  return hex;
}

absl::StatusOr<std::unique_ptr<ServingModel>> ServingModel::Load(const std::string& path,
                                                                int threads) {
  std::unique_ptr<ServingModel> m(new ServingModel());
  m->path_ = path;
  KVS_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::Open(path));
  KVS_ASSIGN_OR_RETURN(m->tokenizer_, Tokenizer::FromGguf(gguf));
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::FromGguf(gguf);
  if (chat.ok() && chat->style() != ChatTemplate::Style::kNone) {
    m->chat_ = std::make_unique<ChatTemplate>(*std::move(chat));
  }
  RunnerOptions ro;
  ro.threads = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  KVS_ASSIGN_OR_RETURN(m->model_, LlamaModel::Load(gguf, ro));
  KVS_ASSIGN_OR_RETURN(m->fingerprint_, FileFingerprint(path));
  // general.name, unless it is missing or just the architecture ("llama"): then the file's stem.
  const ModelConfig& c = m->model_->config();
  m->name_ = c.name.empty() || c.name == c.architecture ? std::filesystem::path(path).stem().string() : c.name;
  return m;
}

int64_t ServingModel::max_context() const { return std::max<int64_t>(1, config().context); }

absl::StatusOr<std::vector<int32_t>> ServingModel::EncodePrompt(absl::string_view text,
                                                                bool chat) const {
  EncodeOptions eo;
  eo.add_bos = tokenizer_->add_bos_by_default();
  if (!chat) return tokenizer_->Encode(text, eo);
  if (chat_ == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("model ", name_, " has no chat template"));
  }
  std::vector<ChatMessage> msgs = {{"user", std::string(text)}};
  KVS_ASSIGN_OR_RETURN(std::string rendered, chat_->Apply(msgs, /*add_generation_prompt=*/true));
  eo.parse_special = true;
  return tokenizer_->Encode(rendered, eo);
}

bool ServingModel::IsStop(int32_t token) const {
  const std::vector<int32_t>& stops = tokenizer_->stop_tokens();
  return std::find(stops.begin(), stops.end(), token) != stops.end();
}

Sampler MakeSampler(float temperature, float top_p, uint64_t seed, int skip) {
  SamplingOptions so;
  so.temperature = temperature;
  so.top_p = top_p > 0 && top_p < 1 ? top_p : 1.0;
  so.seed = seed;
  Sampler s(so);
  // Sampler::Sample draws one uniform per call when temperature > 0 and none when greedy.
  const float one[1] = {0.0f};
  for (int i = 0; i < skip && temperature > 0; ++i) s.Sample(absl::MakeConstSpan(one, 1));
  return s;
}

}  // namespace kvs::control
