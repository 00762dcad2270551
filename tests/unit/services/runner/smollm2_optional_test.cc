// Optional tests on SmolLM2-135M-Instruct (ctest label `smollm2`). They run when
// models/SmolLM2-135M-Instruct.Q4_1.gguf is present (scripts/fetch-models puts it there; the
// KVS_MODELS_DIR environment variable points elsewhere) and report as skipped otherwise.
//
// Reference values come from independent tools, not from this code: tokenizer ids from
// HuggingFace `tokenizers` (BPE + Digits(individual_digits) + ByteLevel over the GGUF's
// vocabulary and merges), dequantised weights from a NumPy reading of the GGUF blocks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "services/runner/generate.h"
#include "services/runner/gguf.h"
#include "services/runner/model.h"
#include "services/runner/quality.h"
#include "services/runner/tokenizer.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::string ModelPath() {
  const char* env = std::getenv("KVS_MODELS_DIR");
  return std::string(env != nullptr ? env : KVS_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

struct Smol {
  GgufFile file;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<LlamaModel> model;
};

// Loaded once for the whole binary; null when the file is absent.
const Smol* Get() {
  static const Smol* s = []() -> const Smol* {
    if (!std::filesystem::exists(ModelPath())) return nullptr;
    auto f = GgufFile::Open(ModelPath());
    if (!f.ok()) {
      ADD_FAILURE() << f.status();
      return nullptr;
    }
    auto* st = new Smol{std::move(f).value(), nullptr, nullptr};
    auto t = Tokenizer::FromGguf(st->file);
    RunnerOptions o;
    o.threads = 1;  // ctest runs tests in parallel on small CI machines
    auto m = LlamaModel::Load(st->file, o);
    if (!t.ok() || !m.ok()) {
      ADD_FAILURE() << t.status() << " " << m.status();
      return nullptr;
    }
    st->tok = std::move(t).value();
    st->model = std::move(m).value();
    return st;
  }();
  return s;
}

#define KVS_REQUIRE_SMOLLM2()                                                              \
  const Smol* smol = Get();                                                                \
  if (smol == nullptr) {                                                                   \
    GTEST_SKIP() << ModelPath() << " is absent: run scripts/fetch-models to enable these"; \
  }

std::string Chat(const std::string& user) {
  return "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
         "Face<|im_end|>\n<|im_start|>user\n" +
         user + "<|im_end|>\n<|im_start|>assistant\n";
}

std::vector<int32_t> EncodeChat(const Tokenizer& t, const std::string& user) {
  EncodeOptions o;
  o.parse_special = true;
  return t.Encode(Chat(user), o);
}

TEST(Smollm2Gguf, TensorTypesAndDequantisationMatchReference) {
  KVS_REQUIRE_SMOLLM2();
  const GgufFile& f = smol->file;
  int q4_1 = 0, q8_0 = 0, f32 = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    q4_1 += t.type == 3;
    q8_0 += t.type == 8;
    f32 += t.type == 0;
  }
  EXPECT_EQ(q4_1, 210);
  EXPECT_EQ(q8_0, 1);  // token_embd.weight
  EXPECT_EQ(f32, 61);
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> emb, f.ReadF32("token_embd.weight", {576, 49152}));
  const float* row = emb.data() + 1780 * 576;
  EXPECT_FLOAT_EQ(row[0], 0.11906814575195312f);
  EXPECT_FLOAT_EQ(row[1], 0.10448837280273438f);
  EXPECT_FLOAT_EQ(row[100], -0.1201629638671875f);
  EXPECT_FLOAT_EQ(row[575], -0.018550872802734375f);
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> wq, f.ReadF32("blk.0.attn_q.weight", {576, 576}));
  const float* q = wq.data() + 7 * 576;
  EXPECT_FLOAT_EQ(q[0], 0.36224365234375f);
  EXPECT_FLOAT_EQ(q[16], 0.16802978515625f);
  EXPECT_FLOAT_EQ(q[31], -0.3175048828125f);
  EXPECT_FLOAT_EQ(q[575], 0.2037353515625f);
  double sum = 0;
  for (int i = 0; i < 576; ++i) sum += q[i];
  EXPECT_NEAR(sum, -5.409759521484375, 1e-4);
}

uint64_t Fnv(const std::vector<int32_t>& ids) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t i : ids) {
    h ^= static_cast<uint64_t>(i);
    h *= 1099511628211ull;
  }
  return h;
}

TEST(Smollm2Tokenizer, MatchesHuggingFaceTokenizers) {
  KVS_REQUIRE_SMOLLM2();
  const Tokenizer& t = *smol->tok;
  EXPECT_EQ(t.kind(), Tokenizer::Kind::kByteLevelBpe);
  EXPECT_EQ(t.vocab_size(), 49152);
  EXPECT_THAT(t.Encode("What is the capital of France?", {}),
              ElementsAreArray({1780, 314, 260, 3575, 282, 4649, 47}));
  EXPECT_THAT(t.Encode("The quick brown fox jumps over the lazy dog in 2024.", {}),
              ElementsAreArray({504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 281, 216, 34,
                                32, 34, 36, 30}));
  EXPECT_THAT(EncodeChat(t, "What is the capital of France?"),
              ElementsAreArray({1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308,
                                34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780,
                                314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198}));
  // Line by line over the excerpts: token count and FNV-1a of the id stream, from HF.
  struct Want {
    const char* file;
    size_t tokens;
    uint64_t fnv;
  };
  for (const Want& w : {Want{"wikitext-2-raw-test-excerpt.txt", 37063, 0x93945e027f71f017ull},
                        Want{"moby-dick-excerpt.txt", 5683, 0xb3a3123b20a5f0dcull}}) {
    std::ifstream in(::kvs::testing::TestDataDir() + "/text/" + w.file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::vector<int32_t> all;
    size_t start = 0;
    const std::string text = ss.str();
    while (start <= text.size()) {  // split on '\n' like Python's bytes.split
      size_t nl = text.find('\n', start);
      if (nl == std::string::npos) nl = text.size();
      const std::string line = text.substr(start, nl - start);
      const std::vector<int32_t> ids = t.Encode(line, {});
      ASSERT_EQ(t.Decode(ids), line);
      all.insert(all.end(), ids.begin(), ids.end());
      start = nl + 1;
    }
    EXPECT_EQ(all.size(), w.tokens) << w.file;
    EXPECT_EQ(Fnv(all), w.fnv) << w.file;
  }
}

TEST(Smollm2Model, AnswersTheCapitalOfFrance) {
  KVS_REQUIRE_SMOLLM2();
  const LlamaModel& m = *smol->model;
  EXPECT_EQ(m.config().layers, 30);
  EXPECT_EQ(m.config().kv_heads, 3);
  EXPECT_EQ(m.config().head_dim, 64);
  EXPECT_TRUE(m.config().tied_output);
  EXPECT_EQ(m.config().rope_base, 100000.0);
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult p, m.Prefill(EncodeChat(*smol->tok, "What is the capital of France?")));
  GenerateOptions g;
  g.max_tokens = 24;
  g.stop_tokens = smol->tok->stop_tokens();
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> out, Generate(m, &p.cache, p.last_logits, g));
  const std::string answer = smol->tok->Decode(out);
  EXPECT_THAT(answer, HasSubstr("Paris")) << answer;
  EXPECT_EQ(out.back(), 2) << "the answer should end with <|im_end|>: " << answer;
}

double MaxRelDiff(absl::Span<const float> a, absl::Span<const float> b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, static_cast<double>(std::fabs(a[i] - b[i])));
    den = std::max(den, static_cast<double>(std::fabs(b[i])));
  }
  return num / std::max(den, 1e-30);
}

TEST(Smollm2Model, PrefillStepsScoreAndKvRoundTripAgreeWithOneForward) {
  KVS_REQUIRE_SMOLLM2();
  const LlamaModel& m = *smol->model;
  std::vector<int32_t> seq = smol->tok->Encode(
      "The tower is 324 metres tall, about the same height as an 81-storey building, and the "
      "tallest structure in Paris.",
      {});
  ASSERT_GT(seq.size(), 20u);
  KvCache full = m.NewCache();
  KVS_ASSERT_OK_AND_ASSIGN(Logits all, m.Extend(&full, seq, /*all_logits=*/true));
  const size_t p = 12;
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult pre, m.Prefill(absl::MakeConstSpan(seq.data(), p)));
  EXPECT_LE(MaxRelDiff(pre.last_logits, all.Row(p - 1)), 1e-4);
  for (size_t i = p; i < seq.size(); ++i) {
    KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> l, m.Step(&pre.cache, seq[i]));
    ASSERT_LE(MaxRelDiff(l, all.Row(static_cast<int64_t>(i))), 1e-4) << "position " << i;
  }
  KVS_ASSERT_OK_AND_ASSIGN(KvCache prefix, full.Prefix(p));
  KVS_ASSERT_OK_AND_ASSIGN(Logits scored, m.Score(prefix, absl::MakeConstSpan(seq).subspan(p)));
  for (int64_t i = 0; i < scored.rows; ++i) {
    ASSERT_LE(MaxRelDiff(scored.Row(i), all.Row(static_cast<int64_t>(p) + i)), 1e-4) << "row " << i;
  }
  // fp16 export -> import resumes to the same greedy tokens.
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult a, m.Prefill(seq));
  std::vector<uint16_t> k, v;
  KVS_ASSERT_OK(a.cache.ExportF16(&k, &v));
  const KvGeometry g = a.cache.geometry();
  EXPECT_EQ(g, (KvGeometry{30, 3, static_cast<int64_t>(seq.size()), 64}));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache b, m.ImportF16(KvCacheView{{k.data(), g}, {v.data(), g}}));
  GenerateOptions opt;
  opt.max_tokens = 16;
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> from_a, Generate(m, &a.cache, a.last_logits, opt));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> from_b, Generate(m, &b, a.last_logits, opt));
  EXPECT_EQ(from_a, from_b);
}

TEST(Smollm2Model, WikiTextPerplexityOverTwoWindows) {
  KVS_REQUIRE_SMOLLM2();
  std::ifstream in(::kvs::testing::TestDataDir() + "/text/wikitext-2-raw-test-excerpt.txt", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = absl::StrReplaceAll(ss.str(), {{"\r\n", "\n"}});
  const std::vector<int32_t> tokens = smol->tok->Encode(text, {});
  KVS_ASSERT_OK_AND_ASSIGN(WindowPerplexity ppl, MeasureWindowPerplexity(*smol->model, tokens, 512, 2));
  EXPECT_EQ(ppl.windows, 2);
  EXPECT_EQ(ppl.scored_tokens, 2 * 511);
  RecordProperty("perplexity", std::to_string(ppl.perplexity));
  std::cout << "SmolLM2-135M-Instruct Q4_1 WikiText-2 perplexity over 2 x 512 tokens: " << ppl.perplexity
            << "\n";
  // A working model lands in the teens to twenties here; a broken one in the hundreds or more.
  EXPECT_GT(ppl.perplexity, 3.0);
  EXPECT_LT(ppl.perplexity, 40.0);
}

}  // namespace
}  // namespace kvs
