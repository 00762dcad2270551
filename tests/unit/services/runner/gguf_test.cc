#include "services/runner/gguf.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/half/half.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"
#include "tests/unit/services/runner/gguf_builder.h"

namespace kvs {
namespace {

using ::kvs::testing::GgufBuilder;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

std::string StoriesPath() { return ::kvs::testing::TestDataDir() + "/models/stories260K.gguf"; }

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// A per-test temporary directory, removed on destruction.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("kvs_gguf_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

 private:
  std::filesystem::path path_;
};

TEST(Gguf, ReadsStories260KMetadataAndTensorTable) {
  KVS_ASSERT_OK_AND_ASSIGN(GgufFile f, GgufFile::Open(StoriesPath()));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.GetString("general.architecture").value(), "llama");
  EXPECT_EQ(f.GetUint("llama.block_count").value(), 5u);
  EXPECT_EQ(f.GetUint("llama.embedding_length").value(), 64u);
  EXPECT_EQ(f.GetUint("llama.attention.head_count_kv").value(), 4u);
  EXPECT_NEAR(f.GetFloat("llama.attention.layer_norm_rms_epsilon").value(), 1e-5, 1e-9);
  EXPECT_EQ(f.GetFloatOr("llama.rope.freq_base", 10000.0).value(), 10000.0);
  KVS_ASSERT_OK_AND_ASSIGN(const std::vector<std::string>* tokens,
                           f.GetStringArray("tokenizer.ggml.tokens"));
  ASSERT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ((*tokens)[3], "<0x00>");
  EXPECT_EQ(f.GetFloatArray("tokenizer.ggml.scores").value()->size(), 512u);
  EXPECT_EQ(f.GetIntArray("tokenizer.ggml.token_type").value()->at(1), 3);
  // Type mismatches are errors, not silent defaults.
  EXPECT_THAT(f.GetString("llama.block_count"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("want string")));
  EXPECT_THAT(f.GetUintOr("general.architecture", 7), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("integer")));
  EXPECT_THAT(f.GetUint("no.such.key"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no.such.key")));

  EXPECT_EQ(f.tensors().size(), 48u);
  const GgufTensorInfo* emb = f.FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dims, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(emb->rows(), 512);
  EXPECT_EQ(GgmlTypeName(emb->type), "F32");
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<float> w, f.ReadF32("token_embd.weight", {64, 512}));
  absl::Span<const uint8_t> raw = f.TensorData(*emb);
  ASSERT_EQ(raw.size(), w.size() * 4);
  EXPECT_EQ(std::memcmp(raw.data(), w.data(), raw.size()), 0);
  EXPECT_THAT(f.ReadF32("token_embd.weight", {512, 64}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dims")));
  EXPECT_THAT(f.ReadF32("nope"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

TEST(Gguf, RejectsEveryTruncationOfStories260K) {
  const std::vector<uint8_t> full = ReadAll(StoriesPath());
  KVS_ASSERT_OK_AND_ASSIGN(GgufFile f, GgufFile::FromBytes(full));
  const uint64_t header = f.data_offset();
  // Every cut inside the header and tensor table, then cuts inside the data section.
  std::vector<uint64_t> cuts;
  for (uint64_t c = 0; c < header; c += 3) cuts.push_back(c);
  for (uint64_t c = header; c < full.size(); c += 4099) cuts.push_back(c);
  cuts.push_back(full.size() - 1);
  for (uint64_t c : cuts) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(c));
    auto r = GgufFile::FromBytes(std::move(cut));
    ASSERT_FALSE(r.ok()) << "cut at " << c;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << "cut at " << c << ": " << r.status();
  }
}

TEST(Gguf, TruncatedFileOnDiskIsAClearError) {
  TempDir dir;
  std::vector<uint8_t> bytes = ReadAll(StoriesPath());
  bytes.resize(bytes.size() - 1000);
  const std::string path = dir.Write("truncated.gguf", bytes);
  EXPECT_THAT(GgufFile::Open(path), StatusIs(absl::StatusCode::kDataLoss,
                                             ::testing::AllOf(HasSubstr("truncated"), HasSubstr("truncated.gguf"),
                                                              HasSubstr("extends past the end"))));
  EXPECT_THAT(GgufFile::Open(dir.Write("empty.gguf", {})), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
  EXPECT_THAT(GgufFile::Open((std::filesystem::temp_directory_path() / "kvs_no_such_file.gguf").string()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("No such file")));
}

// Offset of the `type` field of the tensor table entry `name` (found by its name bytes).
size_t TensorTypeFieldOffset(const std::vector<uint8_t>& bytes, const std::string& name, int n_dims) {
  std::string needle(8, '\0');
  const uint64_t n = name.size();
  std::memcpy(needle.data(), &n, 8);
  needle += name;
  const std::string hay(bytes.begin(), bytes.end());
  const size_t at = hay.find(needle);
  EXPECT_NE(at, std::string::npos);
  return at + needle.size() + 4 + 8 * n_dims;
}

TEST(Gguf, CorruptFieldsAreClearErrors) {
  TempDir dir;
  const std::vector<uint8_t> full = ReadAll(StoriesPath());
  auto patched = [&](size_t off, const void* v, size_t n) {
    std::vector<uint8_t> b = full;
    std::memcpy(b.data() + off, v, n);
    return b;
  };
  const uint32_t bad_magic = 0x12345678, v1 = 1, unknown_type = 99;
  const uint64_t huge = uint64_t{1} << 60;
  EXPECT_THAT(GgufFile::Open(dir.Write("magic.gguf", patched(0, &bad_magic, 4))),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));
  EXPECT_THAT(GgufFile::Open(dir.Write("version.gguf", patched(4, &v1, 4))),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("version 1")));
  EXPECT_THAT(GgufFile::FromBytes(patched(8, &huge, 8)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("tensor count")));
  EXPECT_THAT(GgufFile::FromBytes(patched(16, &huge, 8)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("metadata count")));
  EXPECT_THAT(GgufFile::FromBytes(patched(24, &huge, 8)),  // length of the first key
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("declares")));
  const size_t type_at = TensorTypeFieldOffset(full, "token_embd.weight", 2);
  EXPECT_THAT(GgufFile::Open(dir.Write("type.gguf", patched(type_at, &unknown_type, 4))),
              StatusIs(absl::StatusCode::kDataLoss,
                       ::testing::AllOf(HasSubstr("token_embd.weight"), HasSubstr("unknown ggml type 99"))));
  const uint64_t misaligned = 4;
  EXPECT_THAT(GgufFile::FromBytes(patched(type_at + 4, &misaligned, 8)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("alignment")));
  const uint64_t overlap = 64;  // token_embd now overlaps output_norm... or runs off the end
  EXPECT_FALSE(GgufFile::FromBytes(patched(type_at + 4, &overlap, 8)).ok());
  const uint64_t zero_dim = 0;
  EXPECT_THAT(GgufFile::FromBytes(patched(type_at - 8, &zero_dim, 8)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("invalid dimension")));
}

TEST(Gguf, RandomHeaderCorruptionNeverCrashes) {
  const std::vector<uint8_t> full = ReadAll(StoriesPath());
  KVS_ASSERT_OK_AND_ASSIGN(GgufFile f, GgufFile::FromBytes(full));
  std::mt19937_64 rng(1234);
  std::uniform_int_distribution<size_t> pos(0, f.data_offset() - 1);
  int failures = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<uint8_t> b = full;
    for (int k = 0; k < 4; ++k) b[pos(rng)] ^= static_cast<uint8_t>(1u << (rng() % 8));
    auto r = GgufFile::FromBytes(std::move(b));
    if (!r.ok()) {
      ++failures;
      EXPECT_FALSE(r.status().message().empty());
      continue;
    }
    // Whatever parsed must still be safe to dequantise.
    for (const GgufTensorInfo& t : r->tensors()) {
      std::vector<float> out(static_cast<size_t>(t.elements));
      (void)r->DequantizeF32(t, absl::MakeSpan(out));
    }
  }
  EXPECT_GT(failures, 0);
}

TEST(Gguf, DequantizesEachBlockFormat) {
  // One 32-element block per type with known codes; the expected values follow ggml's
  // reference dequantisation (ggml-quants.c).
  const uint16_t d = FloatToHalf(0.5f), m = FloatToHalf(-1.0f);
  std::vector<uint8_t> q4(16);
  for (int j = 0; j < 16; ++j) q4[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  auto block = [&](std::initializer_list<std::vector<uint8_t>> parts) {
    std::vector<uint8_t> b;
    for (const auto& p : parts) b.insert(b.end(), p.begin(), p.end());
    return b;
  };
  auto h = [](uint16_t v) { return std::vector<uint8_t>{static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)}; };
  float out[32];

  KVS_ASSERT_OK(DequantizeGgml(2, block({h(d), q4}), 32, out));  // Q4_0
  for (int j = 0; j < 16; ++j) {
    EXPECT_FLOAT_EQ(out[j], 0.5f * (j - 8));
    EXPECT_FLOAT_EQ(out[j + 16], 0.5f * (15 - j - 8));
  }
  KVS_ASSERT_OK(DequantizeGgml(3, block({h(d), h(m), q4}), 32, out));  // Q4_1
  for (int j = 0; j < 16; ++j) {
    EXPECT_FLOAT_EQ(out[j], 0.5f * j - 1.0f);
    EXPECT_FLOAT_EQ(out[j + 16], 0.5f * (15 - j) - 1.0f);
  }
  const std::vector<uint8_t> qh = {0x01, 0x00, 0x01, 0x80};  // bits 0, 16, 31
  KVS_ASSERT_OK(DequantizeGgml(6, block({h(d), qh, q4}), 32, out));  // Q5_0
  EXPECT_FLOAT_EQ(out[0], 0.5f * ((0 | 16) - 16));
  EXPECT_FLOAT_EQ(out[1], 0.5f * (1 - 16));
  EXPECT_FLOAT_EQ(out[16], 0.5f * ((15 | 16) - 16));
  EXPECT_FLOAT_EQ(out[31], 0.5f * ((0 | 16) - 16));
  KVS_ASSERT_OK(DequantizeGgml(7, block({h(d), h(m), qh, q4}), 32, out));  // Q5_1
  EXPECT_FLOAT_EQ(out[0], 0.5f * 16 - 1.0f);
  EXPECT_FLOAT_EQ(out[2], 0.5f * 2 - 1.0f);
  EXPECT_FLOAT_EQ(out[16], 0.5f * 31 - 1.0f);
  std::vector<uint8_t> q8(32);
  for (int j = 0; j < 32; ++j) q8[j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  KVS_ASSERT_OK(DequantizeGgml(8, block({h(d), q8}), 32, out));  // Q8_0
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(out[j], 0.5f * (j - 16));
  KVS_ASSERT_OK(DequantizeGgml(1, block({h(d), h(m)}), 2, out));  // F16
  EXPECT_FLOAT_EQ(out[0], 0.5f);
  EXPECT_FLOAT_EQ(out[1], -1.0f);
  const uint16_t b = FloatToBf16(3.0f);
  KVS_ASSERT_OK(DequantizeGgml(30, block({h(b)}), 1, out));  // BF16
  EXPECT_FLOAT_EQ(out[0], 3.0f);
  EXPECT_THAT(DequantizeGgml(8, block({h(d)}), 32, out),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("do not match")));
}

TEST(Gguf, DequantizesKQuantsLikeGgufPy) {
  // One super-block per type: byte i = (i * 37 + 11) & 0xFF, then d (and dmin) set to fp16
  // values; expected values from gguf-py's quants.py (Q4_K/Q5_K/Q6_K.dequantize_blocks).
  struct Case {
    uint32_t type;
    int bytes;
    std::vector<std::pair<int, float>> halves;
    double sum;
    std::vector<float> vals;  // at 0, 1, 31, 32, 100, 200, 255
  };
  const std::vector<Case> cases = {
      {12, 144, {{0, 0.25f}, {2, 0.125f}}, 13610.0, {78.875f, -6.375f, 40.125f, 2.0f, 23.75f, 34.625f, 12.125f}},
      {13, 176, {{0, 0.25f}, {2, 0.125f}}, 29054.0, {202.875f, -6.375f, 40.125f, 28.0f, 58.75f, 34.625f, 27.125f}},
      {14, 210, {{208, 0.0625f}}, 288.25, {-89.4375f, 106.0f, -6.0f, 14.4375f, 157.6875f, 68.0625f, -3.75f}},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> b(c.bytes);
    for (int i = 0; i < c.bytes; ++i) b[i] = static_cast<uint8_t>((i * 37 + 11) & 0xFF);
    for (const auto& [off, v] : c.halves) {
      const uint16_t h = FloatToHalf(v);
      b[off] = static_cast<uint8_t>(h);
      b[off + 1] = static_cast<uint8_t>(h >> 8);
    }
    std::vector<float> out(256);
    KVS_ASSERT_OK(DequantizeGgml(c.type, b, 256, out.data()));
    double sum = 0;
    for (float x : out) sum += x;
    EXPECT_DOUBLE_EQ(sum, c.sum) << GgmlTypeName(c.type);
    const int at[] = {0, 1, 31, 32, 100, 200, 255};
    for (int k = 0; k < 7; ++k) EXPECT_FLOAT_EQ(out[at[k]], c.vals[k]) << GgmlTypeName(c.type) << " [" << at[k] << "]";
  }
}

TEST(Gguf, KnownButUnsupportedTypeIsUnimplementedOnRead) {
  std::vector<uint8_t> data(84, 0);  // one Q2_K block
  GgufBuilder b;
  b.KvU32("general.alignment", 32).Tensor("w", {256}, 10, 0);
  KVS_ASSERT_OK_AND_ASSIGN(GgufFile f, GgufFile::FromBytes(b.Build(data)));
  EXPECT_THAT(f.ReadF32("w"), StatusIs(absl::StatusCode::kUnimplemented,
                                       ::testing::AllOf(HasSubstr("Q2_K"), HasSubstr("'w'"))));
}

TEST(Gguf, SyntheticFileChecksBlocksAlignmentAndOverlap) {
  std::vector<uint8_t> data(64, 0);
  {
    GgufBuilder b;
    b.Tensor("a", {8}, 0, 0).Tensor("b", {8}, 0, 32);
    KVS_ASSERT_OK_AND_ASSIGN(GgufFile f, GgufFile::FromBytes(b.Build(data)));
    EXPECT_EQ(f.tensors().size(), 2u);
  }
  {
    GgufBuilder b;
    b.Tensor("a", {8}, 0, 0).Tensor("b", {8}, 0, 32).Tensor("c", {16}, 0, 0);
    EXPECT_THAT(GgufFile::FromBytes(b.Build(data)), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("overlap")));
  }
  {
    GgufBuilder b;
    b.Tensor("a", {16}, 2, 0);  // Q4_0 needs rows of 32
    EXPECT_THAT(GgufFile::FromBytes(b.Build(data)), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("block size")));
  }
  {
    GgufBuilder b;
    b.KvU32("general.alignment", 24).Tensor("a", {4}, 0, 0);
    EXPECT_THAT(GgufFile::FromBytes(b.Build(data)), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("power of two")));
  }
  {
    GgufBuilder b;
    b.Tensor("a", {4}, 0, 0).Tensor("a", {4}, 0, 32);
    EXPECT_THAT(GgufFile::FromBytes(b.Build(data)), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("duplicate tensor")));
  }
  {
    GgufBuilder b;
    b.Tensor("a", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0);
    EXPECT_THAT(GgufFile::FromBytes(b.Build(data)), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("overflow")));
  }
  {
    GgufBuilder b;
    b.Tensor("a", {1, 1, 1, 1, 1}, 0, 0);
    EXPECT_THAT(GgufFile::FromBytes(b.Build(data)), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("dimensions")));
  }
}

}  // namespace
}  // namespace kvs
