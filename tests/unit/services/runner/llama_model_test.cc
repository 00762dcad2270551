// Llama decoder tests on stories260K. The expected greedy ids come from an independent NumPy
// port of llama2.c's run.c (forward pass, tokenizer, generate loop) reading the model's legacy
// stories260K.bin and tok512.bin, not from this code.
#include "services/runner/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/half/half.h"
#include "services/runner/generate.h"
#include "services/runner/gguf.h"
#include "services/runner/tokenizer.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

using ::kvs::testing::StatusIs;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

struct Stories {
  GgufFile file;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<LlamaModel> model;
};

const Stories& Get() {
  static Stories* s = [] {
    auto f = GgufFile::Open(::kvs::testing::TestDataDir() + "/models/stories260K.gguf");
    EXPECT_TRUE(f.ok()) << f.status();
    auto* st = new Stories{std::move(f).value(), nullptr, nullptr};
    st->tok = Tokenizer::FromGguf(st->file).value();
    RunnerOptions o;
    o.threads = 1;
    st->model = LlamaModel::Load(st->file, o).value();
    return st;
  }();
  return *s;
}

std::vector<int32_t> Encode(const std::string& text) {
  EncodeOptions o;
  o.add_bos = true;
  return Get().tok->Encode(text, o);
}

// Greedy continuation of `prompt` the way llama2.c's generate() runs (stops at BOS).
std::vector<int32_t> Greedy(const std::vector<int32_t>& prompt, int n) {
  const LlamaModel& m = *Get().model;
  auto p = m.Prefill(prompt);
  EXPECT_TRUE(p.ok()) << p.status();
  GenerateOptions g;
  g.max_tokens = n;
  g.stop_tokens = {1};
  auto out = Generate(m, &p->cache, p->last_logits, g);
  EXPECT_TRUE(out.ok()) << out.status();
  return *out;
}

double MaxRelDiff(absl::Span<const float> a, absl::Span<const float> b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, static_cast<double>(std::fabs(a[i] - b[i])));
    den = std::max(den, static_cast<double>(std::fabs(b[i])));
  }
  return num / std::max(den, 1e-30);
}

TEST(LlamaModel, ReadsStories260KConfig) {
  const ModelConfig& c = Get().model->config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.layers, 5);
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden, 172);
  EXPECT_EQ(c.heads, 8);
  EXPECT_EQ(c.kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab, 512);
  EXPECT_FALSE(c.tied_output);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.rope, RopeStyle::kInterleaved);
  EXPECT_EQ(c.rope_base, 10000.0);
}

TEST(LlamaModel, GreedyReproducesLlama2cOnceUponATime) {
  const std::vector<int32_t> prompt = Encode("Once upon a time");
  ASSERT_THAT(prompt, ElementsAreArray({1, 403, 407, 261, 378}));
  const std::vector<int32_t> want = {
      432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419,
      292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268,
      388, 426, 338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426,
      13,  438, 310, 439, 419, 357, 336, 432, 313, 438, 310, 432, 278, 316, 439, 419, 298, 414, 267};
  const std::vector<int32_t> got = Greedy(prompt, static_cast<int>(want.size()));
  EXPECT_THAT(got, ElementsAreArray(want));
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), got.begin(), got.end());
  const std::string text = Get().tok->Decode(all);
  EXPECT_EQ(text.substr(0, 98),
            "Once upon a time, there was a little girl named Lily. She loved to play outside in "
            "the park. One d");
}

TEST(LlamaModel, GreedyReproducesLlama2cOnOtherPrompts) {
  struct Case {
    std::string prompt;
    std::vector<int32_t> want;  // first 40 generated ids
  };
  const std::vector<Case> cases = {
      {"Lily and Tom",
       {382, 276, 337, 299, 322, 265, 282, 295, 433, 426, 342, 397, 355, 267, 337, 335, 265, 315, 267, 422,
        419, 269, 352, 379, 261, 420, 277, 264, 265, 282, 295, 433, 426, 342, 394, 261, 370, 268, 414, 444}},
      {"The little dog was sad because",
       {281, 401, 396, 267, 337, 335, 345, 267, 422, 419, 426, 385, 328, 432, 281, 394, 261, 370, 268, 414,
        444, 322, 265, 298, 420, 277, 264, 426, 291, 268, 414, 444, 286, 399, 262, 429, 295, 266, 269, 279}},
      {"One day, a big bear",
       {395, 368, 302, 263, 377, 267, 265, 329, 412, 402, 335, 345, 357, 426, 342, 394, 261, 370, 432, 352,
        266, 268, 388, 426, 291, 268, 388, 286, 399, 262, 415, 271, 422, 269, 262, 415, 271, 422, 426, 368}},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(Greedy(Encode(c.prompt), 40), ElementsAreArray(c.want)) << c.prompt;
  }
}

TEST(LlamaModel, PrefillThenStepsEqualsOneFullForward) {
  const LlamaModel& m = *Get().model;
  std::vector<int32_t> seq = Encode("Once upon a time");
  const std::vector<int32_t> gen = Greedy(seq, 40);
  seq.insert(seq.end(), gen.begin(), gen.end());
  const size_t p = 5;
  // One forward over the whole sequence.
  KvCache full = m.NewCache();
  KVS_ASSERT_OK_AND_ASSIGN(Logits all, m.Extend(&full, seq, /*all_logits=*/true));
  ASSERT_EQ(all.rows, static_cast<int64_t>(seq.size()));
  // Prefill the first p tokens, then one step per token.
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult pre, m.Prefill(absl::MakeConstSpan(seq.data(), p)));
  EXPECT_LE(MaxRelDiff(pre.last_logits, all.Row(p - 1)), 1e-4);
  for (size_t i = p; i < seq.size(); ++i) {
    KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> l, m.Step(&pre.cache, seq[i]));
    ASSERT_LE(MaxRelDiff(l, all.Row(static_cast<int64_t>(i))), 1e-4) << "position " << i;
  }
  EXPECT_EQ(pre.cache.tokens(), static_cast<int64_t>(seq.size()));
  // Score (teacher forcing over a prefix) gives the same rows, and leaves the prefix alone.
  KVS_ASSERT_OK_AND_ASSIGN(KvCache prefix, full.Prefix(20));
  const std::vector<int32_t> cont(seq.begin() + 20, seq.end());
  KVS_ASSERT_OK_AND_ASSIGN(Logits scored, m.Score(prefix, cont));
  ASSERT_EQ(scored.rows, static_cast<int64_t>(cont.size()));
  for (int64_t i = 0; i < scored.rows; ++i) {
    ASSERT_LE(MaxRelDiff(scored.Row(i), all.Row(20 + i)), 1e-4) << "row " << i;
  }
  EXPECT_EQ(prefix.tokens(), 20);
}

TEST(LlamaModel, ExportedThenImportedKvResumesIdentically) {
  const LlamaModel& m = *Get().model;
  const std::vector<int32_t> prompt = Encode("One day, a big bear");
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult a, m.Prefill(prompt));
  const KvGeometry g = a.cache.geometry();
  EXPECT_EQ(g, (KvGeometry{5, 4, static_cast<int64_t>(prompt.size()), 8}));
  std::vector<uint16_t> k, v;
  KVS_ASSERT_OK(a.cache.ExportF16(&k, &v));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache b, m.ImportF16(KvCacheView{{k.data(), g}, {v.data(), g}}));
  // Export of the import is bit-exact.
  std::vector<uint16_t> k2, v2;
  KVS_ASSERT_OK(b.ExportF16(&k2, &v2));
  EXPECT_EQ(k, k2);
  EXPECT_EQ(v, v2);
  // The fp16-rounded cache resumes to the same tokens as the fp32 one.
  GenerateOptions opt;
  opt.max_tokens = 48;
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> from_a, Generate(m, &a.cache, a.last_logits, opt));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<int32_t> from_b, Generate(m, &b, a.last_logits, opt));
  EXPECT_EQ(from_a, from_b);
  EXPECT_EQ(b.tokens(), static_cast<int64_t>(prompt.size()) + 47);
}

TEST(LlamaModel, EvictedPositionsAreIgnoredByAttention) {
  const LlamaModel& m = *Get().model;
  const std::vector<int32_t> prompt = Encode("Lily and Tom were playing in the park. They liked to play");
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult p, m.Prefill(prompt));
  const KvGeometry g = p.cache.geometry();
  std::vector<uint16_t> k, v;
  KVS_ASSERT_OK(p.cache.ExportF16(&k, &v));
  std::vector<uint8_t> keep(g.tokens, 1);
  keep[3] = keep[4] = keep[7] = 0;
  // Same mask, but the evicted positions hold garbage in one copy: logits must not change.
  std::vector<uint16_t> kg = k, vg = v;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-50.f, 50.f);
  for (int64_t l = 0; l < g.layers; ++l) {
    for (int64_t h = 0; h < g.heads; ++h) {
      for (int64_t s : {3, 4, 7}) {
        for (int64_t d = 0; d < g.head_dim; ++d) {
          const int64_t i = ((l * g.heads + h) * g.tokens + s) * g.head_dim + d;
          kg[i] = FloatToHalf(u(rng));
          vg[i] = FloatToHalf(u(rng));
        }
      }
    }
  }
  KVS_ASSERT_OK_AND_ASSIGN(KvCache clean, m.ImportF16(KvCacheView{{k.data(), g}, {v.data(), g}}, keep));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache dirty, m.ImportF16(KvCacheView{{kg.data(), g}, {vg.data(), g}}, keep));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache full, m.ImportF16(KvCacheView{{k.data(), g}, {v.data(), g}}));
  EXPECT_EQ(clean.evicted(), 3);
  EXPECT_EQ(full.evicted(), 0);
  const std::vector<int32_t> cont = {269, 352, 379, 261};
  KVS_ASSERT_OK_AND_ASSIGN(Logits lc, m.Score(clean, cont));
  KVS_ASSERT_OK_AND_ASSIGN(Logits ld, m.Score(dirty, cont));
  KVS_ASSERT_OK_AND_ASSIGN(Logits lf, m.Score(full, cont));
  EXPECT_EQ(lc.data, ld.data);
  EXPECT_GT(MaxRelDiff(lc.data, lf.data), 1e-3);  // eviction does change the prediction
  // Steps keep the mask: the new positions are attended, the evicted stay out.
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> sc, m.Step(&clean, 269));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> sd, m.Step(&dirty, 269));
  EXPECT_EQ(sc, sd);
  EXPECT_EQ(clean.keep_mask().size(), static_cast<size_t>(g.tokens + 1));
  EXPECT_EQ(clean.keep_mask().back(), 1);
  // A truncated prefix keeps its part of the mask.
  KVS_ASSERT_OK_AND_ASSIGN(KvCache pre, clean.Prefix(5));
  EXPECT_EQ(pre.evicted(), 2);
}

TEST(LlamaModel, PerLayerKeepMasksHideOnlyTheirLayersPositions) {
  const LlamaModel& m = *Get().model;
  const std::vector<int32_t> prompt = Encode("Once upon a time, there was a little girl named Lily. She");
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult p, m.Prefill(prompt));
  const KvGeometry g = p.cache.geometry();
  ASSERT_GE(g.layers, 2);
  std::vector<uint16_t> k, v;
  KVS_ASSERT_OK(p.cache.ExportF16(&k, &v));
  // Layer l evicts positions 2+l and 6+l (a different set per layer, as a pruning codec that
  // encodes each layer slab on its own reports them).
  std::vector<uint8_t> keep(static_cast<size_t>(g.layers * g.tokens), 1);
  for (int64_t l = 0; l < g.layers; ++l) keep[l * g.tokens + 2 + l] = keep[l * g.tokens + 6 + l] = 0;
  // Garbage only where a layer evicted the position: the logits must not see it.
  std::vector<uint16_t> kg = k, vg = v;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-50.f, 50.f);
  for (int64_t l = 0; l < g.layers; ++l) {
    for (int64_t h = 0; h < g.heads; ++h) {
      for (int64_t s : {2 + l, 6 + l}) {
        for (int64_t d = 0; d < g.head_dim; ++d) {
          const int64_t i = ((l * g.heads + h) * g.tokens + s) * g.head_dim + d;
          kg[i] = FloatToHalf(u(rng));
          vg[i] = FloatToHalf(u(rng));
        }
      }
    }
  }
  KVS_ASSERT_OK_AND_ASSIGN(KvCache clean, m.ImportF16(KvCacheView{{k.data(), g}, {v.data(), g}}, keep));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache dirty, m.ImportF16(KvCacheView{{kg.data(), g}, {vg.data(), g}}, keep));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache full, m.ImportF16(KvCacheView{{kg.data(), g}, {vg.data(), g}}));
  for (int64_t l = 0; l < g.layers; ++l) {
    EXPECT_EQ(clean.evicted(0, l), 2) << l;
    const std::vector<uint8_t> ml = clean.keep_mask(0, l);
    ASSERT_EQ(ml.size(), static_cast<size_t>(g.tokens));
    EXPECT_EQ(ml[2 + l], 0) << l;
    EXPECT_EQ(ml[6 + l], 0) << l;
    EXPECT_EQ(ml[0], 1) << l;
  }
  const std::vector<int32_t> cont = {269, 352, 379};
  KVS_ASSERT_OK_AND_ASSIGN(Logits lc, m.Score(clean, cont));
  KVS_ASSERT_OK_AND_ASSIGN(Logits ld, m.Score(dirty, cont));
  KVS_ASSERT_OK_AND_ASSIGN(Logits lf, m.Score(full, cont));
  EXPECT_EQ(lc.data, ld.data);
  EXPECT_GT(MaxRelDiff(ld.data, lf.data), 1e-3);  // unmasked, the garbage does change them
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> sc, m.Step(&clean, 269));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> sd, m.Step(&dirty, 269));
  EXPECT_EQ(sc, sd);
  EXPECT_EQ(clean.keep_mask(0, g.layers - 1).size(), static_cast<size_t>(g.tokens + 1));
  // One mask per layer, all equal, is the same as the single broadcast mask.
  std::vector<uint8_t> one(g.tokens, 1);
  one[3] = one[5] = 0;
  std::vector<uint8_t> tiled;
  for (int64_t l = 0; l < g.layers; ++l) tiled.insert(tiled.end(), one.begin(), one.end());
  KVS_ASSERT_OK_AND_ASSIGN(KvCache a, m.ImportF16(KvCacheView{{k.data(), g}, {v.data(), g}}, one));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache b, m.ImportF16(KvCacheView{{k.data(), g}, {v.data(), g}}, tiled));
  KVS_ASSERT_OK_AND_ASSIGN(Logits la, m.Score(a, cont));
  KVS_ASSERT_OK_AND_ASSIGN(Logits lb, m.Score(b, cont));
  EXPECT_EQ(la.data, lb.data);
  EXPECT_THAT(m.ImportF16(KvCacheView{{k.data(), g}, {v.data(), g}},
                          std::vector<uint8_t>(static_cast<size_t>(g.tokens + 1), 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keep mask")));
}

TEST(LlamaModel, PrefillLayerCallbackSeesEveryLayerInOrderWithTheCachesBytes) {
  const LlamaModel& m = *Get().model;
  const std::vector<int32_t> prompt = Encode("Lily and Ben went to the park. They saw a big dog");
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult plain, m.Prefill(prompt));
  const KvGeometry g = plain.cache.geometry();
  std::vector<uint16_t> k, v;
  KVS_ASSERT_OK(plain.cache.ExportF16(&k, &v));
  // Exported layer by layer from the callback into a buffer pre-filled with a sentinel.
  std::vector<uint16_t> lk(k.size(), 0x7e00), lv(v.size(), 0x7e00);
  const MutableKvCacheView out{{lk.data(), g, DType::kF16}, {lv.data(), g, DType::kF16}};
  std::vector<int64_t> seen;
  KVS_ASSERT_OK_AND_ASSIGN(
      PrefillResult layered, m.Prefill(prompt, [&](const PrefillLayer& pl) -> absl::Status {
        EXPECT_EQ(pl.geom, (KvGeometry{1, g.heads, g.tokens, g.head_dim}));
        // Later layers are not written yet.
        if (pl.layer + 1 < g.layers) {
          EXPECT_EQ(lk[(pl.layer + 1) * g.layer_elements()], 0x7e00);
        }
        seen.push_back(pl.layer);
        return pl.ExportF16(out);
      }));
  std::vector<int64_t> want(g.layers);
  for (int64_t l = 0; l < g.layers; ++l) want[l] = l;
  EXPECT_EQ(seen, want);
  EXPECT_EQ(lk, k);
  EXPECT_EQ(lv, v);
  EXPECT_EQ(layered.last_logits, plain.last_logits);
  // A failing callback stops the prefill with its error.
  int calls = 0;
  EXPECT_THAT(m.Prefill(prompt, [&](const PrefillLayer&) {
                return ++calls == 2 ? absl::CancelledError("client gone") : absl::OkStatus();
              }),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("client gone")));
  EXPECT_EQ(calls, 2);
  const KvGeometry wrong{g.layers, g.heads, g.tokens + 1, g.head_dim};
  std::vector<uint16_t> wb(static_cast<size_t>(wrong.elements()));
  EXPECT_THAT(m.Prefill(prompt, [&](const PrefillLayer& pl) {
                return pl.ExportF16(MutableKvCacheView{{wb.data(), wrong}, {wb.data(), wrong}});
              }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not fit")));
}

TEST(LlamaModel, BatchedSequencesMatchSingleRuns) {
  const LlamaModel& m = *Get().model;
  const std::vector<int32_t> prompt = Encode("Lily and Tom were playing in the park. They liked to play");
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult p, m.Prefill(prompt));
  const KvGeometry g = p.cache.geometry();
  std::vector<uint16_t> k, v;
  KVS_ASSERT_OK(p.cache.ExportF16(&k, &v));
  // Sequence 1: perturbed values and two evicted positions; sequence 2: the original again.
  std::vector<uint16_t> k1 = k, v1 = v;
  for (size_t i = 0; i < k1.size(); i += 3) k1[i] = FloatToHalf(HalfToFloat(k1[i]) * 0.9f);
  std::vector<uint8_t> keep1(g.tokens, 1);
  keep1[2] = keep1[5] = 0;
  const std::vector<KvCacheView> views = {KvCacheView{{k.data(), g}, {v.data(), g}},
                                          KvCacheView{{k1.data(), g}, {v1.data(), g}},
                                          KvCacheView{{k.data(), g}, {v.data(), g}}};
  const std::vector<std::vector<uint8_t>> masks = {{}, keep1, {}};
  KVS_ASSERT_OK_AND_ASSIGN(KvCache batch, m.ImportF16Batch(views, masks));
  EXPECT_EQ(batch.batch(), 3);
  EXPECT_EQ(batch.evicted(0), 0);
  EXPECT_EQ(batch.evicted(1), 2);
  KVS_ASSERT_OK_AND_ASSIGN(KvCache single0, m.ImportF16(views[0]));
  KVS_ASSERT_OK_AND_ASSIGN(KvCache single1, m.ImportF16(views[1], keep1));
  const std::vector<int32_t> cont = {269, 352, 379, 261, 420};
  KVS_ASSERT_OK_AND_ASSIGN(Logits lb, m.Score(batch, cont));
  KVS_ASSERT_OK_AND_ASSIGN(Logits l0, m.Score(single0, cont));
  KVS_ASSERT_OK_AND_ASSIGN(Logits l1, m.Score(single1, cont));
  ASSERT_EQ(lb.rows, 15);
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_LE(MaxRelDiff(lb.Row(i), l0.Row(i)), 1e-5) << i;
    EXPECT_LE(MaxRelDiff(lb.Row(5 + i), l1.Row(i)), 1e-5) << i;
    EXPECT_LE(MaxRelDiff(lb.Row(10 + i), l0.Row(i)), 1e-5) << i;
  }
  // Batched decode steps with a different token per sequence.
  const std::vector<int32_t> next = {269, 352, 379};
  KVS_ASSERT_OK_AND_ASSIGN(Logits sb, m.StepBatch(&batch, next));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> s0, m.Step(&single0, 269));
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> s1, m.Step(&single1, 352));
  ASSERT_EQ(sb.rows, 3);
  EXPECT_LE(MaxRelDiff(sb.Row(0), s0), 1e-5);
  EXPECT_LE(MaxRelDiff(sb.Row(1), s1), 1e-5);
  EXPECT_EQ(batch.tokens(), g.tokens + 1);
  std::vector<uint16_t> kb, vb, ks, vs;
  KVS_ASSERT_OK(batch.ExportF16(&kb, &vb, 1));
  KVS_ASSERT_OK(single1.ExportF16(&ks, &vs));
  EXPECT_EQ(kb, ks);
  EXPECT_THAT(m.Step(&batch, 1), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("StepBatch")));
  EXPECT_THAT(m.StepBatch(&batch, std::vector<int32_t>{1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one token per sequence")));
  EXPECT_THAT(batch.ExportF16(&kb, &vb, 3), StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("sequence 3")));
}

TEST(LlamaModel, RejectsBadInputs) {
  const LlamaModel& m = *Get().model;
  KvCache c = m.NewCache();
  EXPECT_THAT(m.Extend(&c, std::vector<int32_t>{1, 512}, false),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id 512")));
  EXPECT_THAT(m.Extend(&c, std::vector<int32_t>{}, false), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no tokens")));
  KvCache orphan;
  EXPECT_THAT(m.Step(&orphan, 1), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not created")));
  std::vector<uint16_t> buf(5 * 2 * 3 * 8);
  const KvGeometry wrong{5, 2, 3, 8};
  EXPECT_THAT(m.ImportF16(KvCacheView{{buf.data(), wrong}, {buf.data(), wrong}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not fit")));
  KVS_ASSERT_OK_AND_ASSIGN(PrefillResult p, m.Prefill(std::vector<int32_t>{1, 403, 407}));
  EXPECT_THAT(p.cache.SetKeepMask(std::vector<uint8_t>{1, 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 entries for 3")));
  EXPECT_THAT(p.cache.Prefix(4), StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("prefix of 4")));
  RunnerOptions bad;
  bad.dtype = "f16";
  EXPECT_THAT(LlamaModel::Load(Get().file, bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("CUDA")));
}

TEST(Sampler, IsGreedyAtZeroTemperatureAndSeededOtherwise) {
  const std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.0f, 2.0f};
  Sampler greedy({});
  EXPECT_EQ(greedy.Sample(logits), 1);  // first of the tied maxima
  SamplingOptions s;
  s.temperature = 1.0;
  s.seed = 42;
  Sampler a(s), b(s);
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 2000; ++i) {
    const int32_t x = a.Sample(logits);
    EXPECT_EQ(x, b.Sample(logits));
    ++counts[x];
  }
  EXPECT_GT(counts[2], 0);
  EXPECT_GT(counts[0], 0);
  s.top_p = 0.5;  // only the two (equal) top tokens survive
  Sampler nucleus(s);
  for (int i = 0; i < 200; ++i) {
    const int32_t x = nucleus.Sample(logits);
    EXPECT_TRUE(x == 1 || x == 4) << x;
  }
}

}  // namespace
}  // namespace kvs
