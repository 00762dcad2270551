// services/runner/tokenizer.h — tokenizers built from GGUF metadata, and chat templates.
//
// Two families, chosen by tokenizer.ggml.model:
//   "llama" — SentencePiece-style: per-token scores, "▁" for space, a dummy space prefix,
//             <0xXX> byte fallback, BOS/EOS. Encoding follows llama2.c: split into UTF-8
//             characters, then repeatedly merge the adjacent pair whose concatenation is a
//             vocabulary token with the highest score (leftmost on ties). Implemented with a heap,
//             which gives exactly the pairs llama2.c's quadratic loop picks.
//   "gpt2"  — byte-level BPE (GPT-2, SmolLM2, StarCoder...): bytes mapped to printable code
//             points, a regex pre-tokenizer, merges applied by rank.
//
//   KVS_ASSIGN_OR_RETURN(std::unique_ptr<kvs::Tokenizer> tok, kvs::Tokenizer::FromGguf(gguf));
//   kvs::EncodeOptions opts;
//   opts.add_bos = tok->add_bos_by_default();
//   std::vector<int32_t> ids = tok->Encode("Once upon a time", opts);
//   std::string text = tok->Decode(ids);
//
// Thread-safety: a Tokenizer is immutable after construction; all methods may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvs {

class GgufFile;

struct EncodeOptions {
  // Prepend the BOS token.
  bool add_bos = false;
  // Text spans that spell a control token (e.g. "<|im_start|>") become that token; otherwise
  // they are encoded as ordinary text. Chat templates need this.
  bool parse_special = false;
};

class Tokenizer {
 public:
  enum class Kind { kSentencePiece, kByteLevelBpe };

  virtual ~Tokenizer() = default;

  // Builds the tokenizer a GGUF file describes (tokenizer.ggml.*). InvalidArgument when the
  // metadata is inconsistent (array lengths, ids out of range), Unimplemented for an unknown
  // tokenizer model or pre-tokenizer.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf);

  virtual Kind kind() const = 0;
  virtual std::vector<int32_t> Encode(absl::string_view text, const EncodeOptions& options) const = 0;
  // The bytes token `token` contributes after `prev` (-1 at the start). Control tokens give "".
  // SentencePiece drops the leading space of the first piece after BOS, as llama2.c does.
  virtual std::string DecodeToken(int32_t prev, int32_t token) const = 0;
  // Concatenates DecodeToken over `tokens`.
  std::string Decode(absl::Span<const int32_t> tokens) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos() const { return bos_; }  // -1 when the model has none
  int32_t eos() const { return eos_; }
  // tokenizer.ggml.add_bos_token (default: true for SentencePiece, false for byte-level BPE).
  bool add_bos_by_default() const { return add_bos_; }
  const std::string& token_text(int32_t id) const { return tokens_[id]; }
  bool IsControl(int32_t id) const;
  // Tokens that end generation: EOS, BOS (a new document; llama2.c stops there) and, where the
  // vocabulary has them as control tokens, end markers such as "<|im_end|>" and "<|endoftext|>".
  const std::vector<int32_t>& stop_tokens() const { return stop_tokens_; }

 protected:
  Tokenizer() = default;
  // Reads the fields shared by both families.
  absl::Status InitCommon(const GgufFile& gguf, bool default_add_bos);

  std::vector<std::string> tokens_;
  std::vector<int32_t> token_types_;  // GGUF: 1 normal, 2 unknown, 3 control, 4 user, 5 unused, 6 byte
  int32_t bos_ = -1, eos_ = -1, unk_ = -1;
  bool add_bos_ = false;
  std::vector<int32_t> stop_tokens_;
};

// One chat message.
struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// The chat template a model ships in tokenizer.chat_template, recognised by its markers (a Jinja
// interpreter is out of scope). ChatML ("<|im_start|>role\ncontent<|im_end|>\n") is supported,
// including a default system prompt the template inserts when the conversation has none
// (SmolLM2 does). Render the result with EncodeOptions::parse_special.
class ChatTemplate {
 public:
  enum class Style { kNone, kChatMl };

  // Style kNone when the file has no template; Unimplemented for a template that is not ChatML.
  static absl::StatusOr<ChatTemplate> FromGguf(const GgufFile& gguf);
  static ChatTemplate ChatMl(std::string default_system);

  Style style() const { return style_; }
  const std::string& default_system() const { return default_system_; }
  // Renders the conversation; with add_generation_prompt the assistant header follows.
  // FailedPrecondition for Style kNone.
  absl::StatusOr<std::string> Apply(absl::Span<const ChatMessage> messages,
                                    bool add_generation_prompt) const;

 private:
  Style style_ = Style::kNone;
  std::string default_system_;
};

}  // namespace kvs
