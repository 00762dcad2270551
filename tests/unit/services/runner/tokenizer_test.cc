// Tokenizer tests. Expected ids come from independent implementations, not from this code:
// SentencePiece ids from a NumPy port of llama2.c's encode() over its tok512.bin, byte-level
// BPE ids from HuggingFace `tokenizers` (BPE + Digits(individual_digits) + ByteLevel) built
// from the same vocabulary and merges.
#include "services/runner/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "services/runner/gguf.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"
#include "tests/unit/services/runner/gguf_builder.h"

namespace kvs {
namespace {

using ::kvs::testing::GgufBuilder;
using ::kvs::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::vector<std::string> ReadLines(const std::string& name) {
  std::ifstream in(::kvs::testing::TestDataDir() + "/text/" + name, std::ios::binary);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::unique_ptr<Tokenizer> Stories() {
  auto f = GgufFile::Open(::kvs::testing::TestDataDir() + "/models/stories260K.gguf");
  EXPECT_TRUE(f.ok()) << f.status();
  auto t = Tokenizer::FromGguf(*f);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

EncodeOptions Bos() {
  EncodeOptions o;
  o.add_bos = true;
  return o;
}

TEST(SentencePieceTokenizer, MatchesLlama2cEncode) {
  std::unique_ptr<Tokenizer> t = Stories();
  ASSERT_EQ(t->kind(), Tokenizer::Kind::kSentencePiece);
  EXPECT_EQ(t->vocab_size(), 512);
  EXPECT_EQ(t->bos(), 1);
  EXPECT_EQ(t->eos(), 2);
  EXPECT_TRUE(t->add_bos_by_default());
  EXPECT_THAT(t->Encode("Once upon a time", Bos()), ElementsAre(1, 403, 407, 261, 378));
  EXPECT_THAT(t->Encode("Lily and Tom went to the park.", Bos()),
              ElementsAre(1, 317, 269, 274, 287, 263, 377, 267, 265, 282, 295, 433, 426));
  // Byte fallback for characters outside the 512-token vocabulary.
  EXPECT_THAT(t->Encode("The café — naïve 123 résumé", Bos()),
              ElementsAreArray({1, 291, 280, 412, 431, 485, 410, 481, 297, 412, 198, 178, 360, 410,
                                475, 479, 472, 352, 485, 419, 425, 423, 485}));
  EXPECT_THAT(t->Encode(" leading space", Bos()),
              ElementsAre(1, 410, 278, 411, 380, 299, 262, 427, 412, 331));
  EXPECT_THAT(t->Encode("Hello\nworld", Bos()), ElementsAre(1, 346, 306, 414, 13, 424, 304, 341));
  EXPECT_THAT(t->Encode("", Bos()), ElementsAre(1));
  EXPECT_THAT(t->Encode("Once", {}), ElementsAre(403));
}

TEST(SentencePieceTokenizer, DecodesLikeLlama2c) {
  std::unique_ptr<Tokenizer> t = Stories();
  EXPECT_EQ(t->DecodeToken(1, 403), "Once");       // leading space dropped after BOS
  EXPECT_EQ(t->DecodeToken(403, 407), " upon");
  EXPECT_EQ(t->DecodeToken(403, 13), "\n");         // <0x0A>
  EXPECT_EQ(t->DecodeToken(403, 1), "");            // control
  EXPECT_EQ(t->Decode(t->Encode("The café — naïve", Bos())), "The café — naïve");
}

TEST(SentencePieceTokenizer, RoundTripsWikiTextAndMobyDick) {
  std::unique_ptr<Tokenizer> t = Stories();
  size_t tokens = 0;
  for (const char* file : {"wikitext-2-raw-test-excerpt.txt", "moby-dick-excerpt.txt"}) {
    const std::vector<std::string> lines = ReadLines(file);
    ASSERT_GT(lines.size(), 200u) << file;
    for (const std::string& line : lines) {
      const std::vector<int32_t> ids = t->Encode(line, Bos());
      tokens += ids.size();
      ASSERT_EQ(t->Decode(ids), line) << file;
    }
  }
  EXPECT_GT(tokens, 30000u);
}

// A byte-level BPE vocabulary: 3 specials, the 256 GPT-2 byte symbols in byte order, then one
// token per merge.
GgufBuilder SyntheticBpe(const std::string& pre = "smollm") {
  auto utf8 = [](uint32_t c) {
    std::string s;
    if (c < 0x80) {
      s.push_back(static_cast<char>(c));
    } else {
      s.push_back(static_cast<char>(0xC0 | (c >> 6)));
      s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
    return s;
  };
  std::vector<std::string> tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  int n = 0;
  std::vector<std::string> bytes(256);
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    bytes[b] = printable ? utf8(b) : "";
  }
  for (int b = 0; b < 256; ++b) {
    if (bytes[b].empty()) bytes[b] = utf8(256 + n++);
  }
  tokens.insert(tokens.end(), bytes.begin(), bytes.end());
  const std::vector<std::string> merges = {"Ġ t", "h e", "Ġt he", "i n", "Ġ a", "a n", "Ġa n",
                                           "Ġan d", "1 2", "Ġ Ġ", "' s", "Ġ w", "o r", "Ġw or",
                                           "l d", "Ġwor ld", "Ċ Ċ"};
  for (const std::string& m : merges) {
    std::string t = m;
    t.erase(t.find(' '), 1);
    tokens.push_back(t);
  }
  std::vector<int32_t> types(tokens.size(), 1);
  types[0] = types[1] = types[2] = 3;
  GgufBuilder b;
  b.KvString("tokenizer.ggml.model", "gpt2")
      .KvString("tokenizer.ggml.pre", pre)
      .KvStrings("tokenizer.ggml.tokens", tokens)
      .KvI32s("tokenizer.ggml.token_type", types)
      .KvStrings("tokenizer.ggml.merges", merges)
      .KvU32("tokenizer.ggml.bos_token_id", 1)
      .KvU32("tokenizer.ggml.eos_token_id", 2)
      .KvU32("tokenizer.ggml.unknown_token_id", 0);
  return b;
}

std::unique_ptr<Tokenizer> FromBuilder(const GgufBuilder& b) {
  auto f = GgufFile::FromBytes(b.Build());
  EXPECT_TRUE(f.ok()) << f.status();
  auto t = Tokenizer::FromGguf(*f);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(t).value() : nullptr;
}

TEST(ByteLevelBpeTokenizer, MatchesHuggingFaceOnSyntheticVocabulary) {
  std::unique_ptr<Tokenizer> t = FromBuilder(SyntheticBpe());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), Tokenizer::Kind::kByteLevelBpe);
  EXPECT_FALSE(t->add_bos_by_default());
  // Digits are split one by one (the "1 2" merge never applies); "\n\n" before a word splits.
  EXPECT_THAT(t->Encode("the world and the 12 ants", {}),
              ElementsAreArray({119, 260, 274, 266, 261, 35, 52, 53, 265, 119, 118}));
  EXPECT_THAT(t->Encode("it's  in\n\nthe   world", {}),
              ElementsAreArray({108, 119, 269, 35, 35, 262, 13, 13, 119, 260, 268, 274}));
  EXPECT_THAT(t->Encode("café 2024!", {}),
              ElementsAreArray({102, 100, 105, 198, 172, 35, 53, 51, 53, 55, 36}));
  EXPECT_THAT(t->Encode("x  \n y", {}), ElementsAre(123, 268, 13, 35, 124));
  EncodeOptions special;
  special.parse_special = true;
  EXPECT_THAT(t->Encode("<|im_start|>user\nthe world<|im_end|>", special),
              ElementsAreArray({1, 120, 118, 104, 117, 13, 119, 260, 274, 2}));
  // Without parse_special the markers are plain text.
  EXPECT_GT(t->Encode("<|im_start|>", {}).size(), 1u);
  EXPECT_THAT(t->stop_tokens(), ::testing::UnorderedElementsAre(0, 1, 2));
}

TEST(ByteLevelBpeTokenizer, RoundTripsRealText) {
  std::unique_ptr<Tokenizer> t = FromBuilder(SyntheticBpe());
  ASSERT_NE(t, nullptr);
  for (const char* file : {"wikitext-2-raw-test-excerpt.txt", "moby-dick-excerpt.txt"}) {
    for (const std::string& line : ReadLines(file)) ASSERT_EQ(t->Decode(t->Encode(line, {})), line);
  }
  const std::string odd = std::string("bad \xff\xfe utf8 \xe2\x82 end\0x", 20);
  EXPECT_EQ(t->Decode(t->Encode(odd, {})), odd);
  EXPECT_EQ(t->DecodeToken(-1, 2), "");  // control tokens decode to nothing
}

TEST(ByteLevelBpeTokenizer, GptTwoPreTokenizerKeepsDigitRuns) {
  std::unique_ptr<Tokenizer> t = FromBuilder(SyntheticBpe("gpt2"));
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("12", {}), ElementsAre(267));  // the "1 2" merge applies
}

TEST(Tokenizer, RejectsInconsistentMetadata) {
  {
    auto f = GgufFile::FromBytes(SyntheticBpe("llama-bpe").Build());
    ASSERT_TRUE(f.ok());
    EXPECT_THAT(Tokenizer::FromGguf(*f), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("llama-bpe")));
  }
  {
    GgufBuilder b;
    b.KvString("tokenizer.ggml.model", "rwkv").KvStrings("tokenizer.ggml.tokens", {"a"});
    auto f = GgufFile::FromBytes(b.Build());
    ASSERT_TRUE(f.ok());
    EXPECT_THAT(Tokenizer::FromGguf(*f), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("rwkv")));
  }
  {
    GgufBuilder b;
    b.KvString("tokenizer.ggml.model", "llama")
        .KvStrings("tokenizer.ggml.tokens", {"a", "b"})
        .KvF32s("tokenizer.ggml.scores", {0.f});
    auto f = GgufFile::FromBytes(b.Build());
    ASSERT_TRUE(f.ok());
    EXPECT_THAT(Tokenizer::FromGguf(*f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 scores for 2 tokens")));
  }
  {
    GgufBuilder b;
    b.KvString("tokenizer.ggml.model", "llama")
        .KvStrings("tokenizer.ggml.tokens", {"a", "b"})
        .KvF32s("tokenizer.ggml.scores", {0.f, 0.f})
        .KvU32("tokenizer.ggml.eos_token_id", 7);
    auto f = GgufFile::FromBytes(b.Build());
    ASSERT_TRUE(f.ok());
    EXPECT_THAT(Tokenizer::FromGguf(*f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the vocabulary")));
  }
}

TEST(ChatTemplate, RendersChatMlWithTheDefaultSystemPrompt) {
  const std::string smol =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
      "'<|im_start|>assistant\n' }}{% endif %}";
  GgufBuilder b = SyntheticBpe();
  b.KvString("tokenizer.chat_template", smol);
  auto f = GgufFile::FromBytes(b.Build());
  ASSERT_TRUE(f.ok());
  KVS_ASSERT_OK_AND_ASSIGN(ChatTemplate ct, ChatTemplate::FromGguf(*f));
  EXPECT_EQ(ct.style(), ChatTemplate::Style::kChatMl);
  EXPECT_EQ(ct.default_system(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const std::vector<ChatMessage> user = {{"user", "What is the capital of France?"}};
  KVS_ASSERT_OK_AND_ASSIGN(std::string text, ct.Apply(user, true));
  EXPECT_EQ(text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\n");
  const std::vector<ChatMessage> sys = {{"system", "Be brief."}, {"user", "Hi"}};
  KVS_ASSERT_OK_AND_ASSIGN(text, ct.Apply(sys, false));
  EXPECT_EQ(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");

  KVS_ASSERT_OK_AND_ASSIGN(GgufFile stories,
                           GgufFile::Open(::kvs::testing::TestDataDir() + "/models/stories260K.gguf"));
  KVS_ASSERT_OK_AND_ASSIGN(ChatTemplate none, ChatTemplate::FromGguf(stories));
  EXPECT_EQ(none.style(), ChatTemplate::Style::kNone);
  EXPECT_THAT(none.Apply(user, true), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("none")));

  GgufBuilder other = SyntheticBpe();
  other.KvString("tokenizer.chat_template", "{{ bos_token }}[INST] {{ message }} [/INST]");
  auto of = GgufFile::FromBytes(other.Build());
  ASSERT_TRUE(of.ok());
  EXPECT_THAT(ChatTemplate::FromGguf(*of), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("ChatML")));
}

}  // namespace
}  // namespace kvs
