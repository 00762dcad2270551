// services/runner/tokenizer.cc — the tokenizer factory, the SentencePiece-style tokenizer and
// chat templates. The byte-level BPE tokenizer lives in bpe_tokenizer.cc.
#include "services/runner/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <queue>
#include <unordered_map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status/status.h"
#include "services/runner/gguf.h"
#include "services/runner/tokenizer_internal.h"

namespace kvs {

namespace {
constexpr int32_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4,
                  kTypeByte = 6;
constexpr absl::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 "▁"

// Length of the UTF-8 sequence starting at s[i] as llama2.c groups it: a lead byte plus up to
// three continuation bytes (malformed input degrades to single bytes).
size_t Utf8Len(absl::string_view s, size_t i) {
  size_t j = i + 1;
  while (j < s.size() && (static_cast<uint8_t>(s[j]) & 0xC0) == 0x80 && j - i < 4) ++j;
  return j - i;
}

// SentencePiece-style tokenizer (tokenizer.ggml.model == "llama").
class SentencePieceTokenizer final : public Tokenizer {
 public:
  absl::Status Init(const GgufFile& gguf) {
    KVS_RETURN_IF_ERROR(InitCommon(gguf, /*default_add_bos=*/true));
    KVS_ASSIGN_OR_RETURN(const std::vector<double>* scores, gguf.GetFloatArray("tokenizer.ggml.scores"));
    if (scores->size() != tokens_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", scores->size(), " scores for ",
                                                     tokens_.size(), " tokens"));
    }
    scores_.assign(scores->begin(), scores->end());
    KVS_ASSIGN_OR_RETURN(add_space_prefix_, gguf.GetBoolOr("tokenizer.ggml.add_space_prefix", true));
    byte_tokens_.fill(-1);
    for (int32_t id = 0; id < vocab_size(); ++id) {
      const std::string& t = tokens_[id];
      const int32_t type = token_types_[id];
      if (type == kTypeByte) {
        unsigned v = 0;
        if (t.size() == 6 && absl::StartsWith(t, "<0x") && t[5] == '>' &&
            sscanf(t.c_str() + 3, "%2x", &v) == 1) {
          byte_tokens_[v] = id;
        }
        continue;
      }
      // Control and unknown tokens are never produced by merging text (llama2.c would match
      // "<s>" spelled in the text; SentencePiece does not).
      if (type == kTypeControl || type == kTypeUnknown) continue;
      lookup_.emplace(t, id);  // first id wins on duplicates
    }
    return absl::OkStatus();
  }

  Kind kind() const override { return Kind::kSentencePiece; }

  std::vector<int32_t> Encode(absl::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> out;
    if (options.add_bos && bos_ >= 0) out.push_back(bos_);
    if (text.empty()) return out;
    std::string norm;
    if (add_space_prefix_) norm.append(kSpmSpace.data(), kSpmSpace.size());
    norm += absl::StrReplaceAll(text, {{" ", std::string(kSpmSpace)}});

    // Symbols: byte ranges of `norm` (a linked list), each mapped to a token id.
    struct Sym {
      size_t start, len;
      int32_t id;
      bool fallback;  // a <0xXX> byte token: never merged (llama2.c merges token strings)
      int prev, next;
    };
    std::vector<Sym> syms;
    for (size_t i = 0; i < norm.size();) {
      const size_t n = Utf8Len(norm, i);
      auto it = lookup_.find(std::string(norm.substr(i, n)));
      if (it != lookup_.end()) {
        syms.push_back({i, n, it->second, false, 0, 0});
      } else {
        for (size_t b = 0; b < n; ++b) {  // byte fallback: one symbol per byte
          const int32_t id = byte_tokens_[static_cast<uint8_t>(norm[i + b])];
          syms.push_back({i + b, 1, id >= 0 ? id : unk_, true, 0, 0});
        }
      }
      i += n;
    }
    for (size_t k = 0; k < syms.size(); ++k) {
      syms[k].prev = static_cast<int>(k) - 1;
      syms[k].next = k + 1 < syms.size() ? static_cast<int>(k + 1) : -1;
    }

    // Candidate merges ordered by (score desc, position asc); stale entries are skipped.
    struct Cand {
      float score;
      int left, right;
      size_t len;  // total byte length when queued (detects a changed symbol)
      int32_t id;
    };
    auto worse = [](const Cand& a, const Cand& b) {
      if (a.score != b.score) return a.score < b.score;
      return a.left > b.left;
    };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
    auto try_pair = [&](int l) {
      if (l < 0 || syms[l].next < 0) return;
      const int r = syms[l].next;
      if (syms[l].fallback || syms[r].fallback) return;
      auto it = lookup_.find(norm.substr(syms[l].start, syms[l].len + syms[r].len));
      if (it == lookup_.end()) return;
      heap.push({scores_[it->second], l, r, syms[l].len + syms[r].len, it->second});
    };
    for (int k = 0; k + 1 < static_cast<int>(syms.size()); ++k) try_pair(k);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      Sym& l = syms[c.left];
      if (l.len == 0 || l.next != c.right || syms[c.right].len == 0 ||
          l.len + syms[c.right].len != c.len) {
        continue;  // stale
      }
      Sym& r = syms[c.right];
      l.len += r.len;
      l.id = c.id;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = c.left;
      try_pair(l.prev);
      try_pair(c.left);
    }
    for (int k = syms.empty() ? -1 : 0; k >= 0; k = syms[k].next) out.push_back(syms[k].id);
    return out;
  }

  std::string DecodeToken(int32_t prev, int32_t token) const override {
    if (token < 0 || token >= vocab_size()) return "";
    const int32_t type = token_types_[token];
    if (type == kTypeControl) return "";
    if (type == kTypeByte) {
      for (int b = 0; b < 256; ++b) {
        if (byte_tokens_[b] == token) return std::string(1, static_cast<char>(b));
      }
      return "";
    }
    std::string piece = absl::StrReplaceAll(tokens_[token], {{kSpmSpace, " "}});
    if ((prev == bos_ || prev < 0) && !piece.empty() && piece[0] == ' ' && add_space_prefix_) {
      piece.erase(0, 1);
    }
    return piece;
  }

 private:
  std::vector<float> scores_;
  std::unordered_map<std::string, int32_t> lookup_;
  std::array<int32_t, 256> byte_tokens_;
  bool add_space_prefix_ = true;
};

}  // namespace

absl::Status Tokenizer::InitCommon(const GgufFile& gguf, bool default_add_bos) {
  KVS_ASSIGN_OR_RETURN(const std::vector<std::string>* tokens, gguf.GetStringArray("tokenizer.ggml.tokens"));
  if (tokens->empty() || tokens->size() > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", tokens->size(), " tokens"));
  }
  tokens_ = *tokens;
  token_types_.assign(tokens_.size(), kTypeNormal);
  if (gguf.Has("tokenizer.ggml.token_type")) {
    KVS_ASSIGN_OR_RETURN(const std::vector<int64_t>* types, gguf.GetIntArray("tokenizer.ggml.token_type"));
    if (types->size() != tokens_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", types->size(),
                                                     " token types for ", tokens_.size(), " tokens"));
    }
    for (size_t i = 0; i < types->size(); ++i) token_types_[i] = static_cast<int32_t>((*types)[i]);
  }
  auto id = [&](absl::string_view key, int32_t* out) -> absl::Status {
    if (!gguf.Has(key)) return absl::OkStatus();
    KVS_ASSIGN_OR_RETURN(uint64_t v, gguf.GetUint(key));
    if (v == 0xFFFFFFFFu) return absl::OkStatus();  // "none" in llama.cpp's converters
    if (v >= tokens_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", key, " = ", v,
                                                     " is outside the vocabulary of ", tokens_.size()));
    }
    *out = static_cast<int32_t>(v);
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(id("tokenizer.ggml.bos_token_id", &bos_));
  KVS_RETURN_IF_ERROR(id("tokenizer.ggml.eos_token_id", &eos_));
  KVS_RETURN_IF_ERROR(id("tokenizer.ggml.unknown_token_id", &unk_));
  KVS_ASSIGN_OR_RETURN(add_bos_, gguf.GetBoolOr("tokenizer.ggml.add_bos_token", default_add_bos));
  if (eos_ >= 0) stop_tokens_.push_back(eos_);
  // A generated BOS starts a new document (llama2.c stops there too).
  if (bos_ >= 0 && bos_ != eos_) stop_tokens_.push_back(bos_);
  for (const char* marker : {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"}) {
    for (int32_t i = 0; i < vocab_size(); ++i) {
      if (tokens_[i] == marker && IsControl(i) && i != eos_) stop_tokens_.push_back(i);
    }
  }
  return absl::OkStatus();
}

bool Tokenizer::IsControl(int32_t id) const {
  return id >= 0 && id < vocab_size() &&
         (token_types_[id] == kTypeControl || token_types_[id] == kTypeUserDefined);
}

std::string Tokenizer::Decode(absl::Span<const int32_t> tokens) const {
  std::string out;
  int32_t prev = -1;
  for (int32_t t : tokens) {
    out += DecodeToken(prev, t);
    prev = t;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& gguf) {
  KVS_ASSIGN_OR_RETURN(std::string model, gguf.GetString("tokenizer.ggml.model"));
  if (model == "llama") {
    auto t = std::make_unique<SentencePieceTokenizer>();
    KVS_RETURN_IF_ERROR(t->Init(gguf));
    return std::unique_ptr<Tokenizer>(std::move(t));
  }
  if (model == "gpt2") return NewByteLevelBpeTokenizer(gguf);
  return absl::UnimplementedError(absl::StrCat("tokenizer: model '", model,
                                               "' unsupported (want 'llama' or 'gpt2')"));
}

// ---- chat templates -------------------------------------------------------------------------

absl::StatusOr<ChatTemplate> ChatTemplate::FromGguf(const GgufFile& gguf) {
  if (!gguf.Has("tokenizer.chat_template")) return ChatTemplate();
  KVS_ASSIGN_OR_RETURN(std::string tmpl, gguf.GetString("tokenizer.chat_template"));
  if (!absl::StrContains(tmpl, "<|im_start|>")) {
    return absl::UnimplementedError(
        "chat template: only ChatML templates are recognised (no Jinja interpreter)");
  }
  // A default system prompt written literally after "<|im_start|>system\n".
  std::string system;
  const std::string marker = "<|im_start|>system\n";
  const size_t at = tmpl.find(marker);
  if (at != std::string::npos) {
    const size_t begin = at + marker.size();
    const size_t end = tmpl.find("<|im_end|>", begin);
    if (end != std::string::npos && tmpl.find_first_of("{}'", begin) > end) {
      system = tmpl.substr(begin, end - begin);
    }
  }
  return ChatMl(std::move(system));
}

ChatTemplate ChatTemplate::ChatMl(std::string default_system) {
  ChatTemplate t;
  t.style_ = Style::kChatMl;
  t.default_system_ = std::move(default_system);
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Apply(absl::Span<const ChatMessage> messages,
                                                bool add_generation_prompt) const {
  if (style_ == Style::kNone) {
    return absl::FailedPreconditionError("chat template: the model has none");
  }
  std::string out;
  if (!default_system_.empty() && (messages.empty() || messages[0].role != "system")) {
    absl::StrAppend(&out, "<|im_start|>system\n", default_system_, "<|im_end|>\n");
  }
  for (const ChatMessage& m : messages) {
    absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
  }
  if (add_generation_prompt) absl::StrAppend(&out, "<|im_start|>assistant\n");
  return out;
}

}  // namespace kvs
