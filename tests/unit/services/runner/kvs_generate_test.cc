// Runs the kvs-generate binary on stories260K: greedy text on stdout, statistics on stderr, and
// --dump-kv writing fp16 [L,H,S,D] K/V that kvs-codec can read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/npy/npy.h"
#include "tests/testing/test_data.h"

namespace kvs {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Result {
  int rc;
  std::string out, err;
};

Result RunGenerate(const std::string& args, const std::filesystem::path& dir) {
  const std::string err_path = (dir / "stderr.txt").string();
  const std::string cmd = std::string(KVS_GENERATE_BIN) + " " + args + " 2>" + err_path;
  Result r{-1, "", ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  r.rc = ::pclose(p);
  std::ifstream e(err_path);
  std::stringstream ss;
  ss << e.rdbuf();
  r.err = ss.str();
  return r;
}

class KvsGenerate : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kvs_generate_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Model() const { return ::kvs::testing::TestDataDir() + "/models/stories260K.gguf"; }
  std::filesystem::path dir_;
};

TEST_F(KvsGenerate, GreedyTextOnStdoutStatsOnStderrAndKvDump) {
  const std::string kv = (dir_ / "kv").string();
  const Result r = RunGenerate("--model " + Model() +
                                   " --prompt 'Once upon a time' --max-tokens 24 --threads 1 --dump-kv " + kv,
                               dir_);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("Once upon a time, there was a little girl named Lily. She loved to play"));
  EXPECT_THAT(r.err, HasSubstr("prefill: 5 tokens"));
  EXPECT_THAT(r.err, HasSubstr("tokens/s"));
  auto k = ReadNpy(kv + "/K.npy");
  auto v = ReadNpy(kv + "/V.npy");
  auto t = ReadNpy(kv + "/tokens.npy");
  ASSERT_TRUE(k.ok() && v.ok() && t.ok());
  EXPECT_EQ(k->dtype, "<f2");
  EXPECT_EQ(k->shape, (std::vector<int64_t>{5, 4, 5, 8}));
  EXPECT_EQ(v->shape, k->shape);
  EXPECT_EQ(t->dtype, "<i4");
  EXPECT_EQ(t->shape, (std::vector<int64_t>{5}));
}

TEST_F(KvsGenerate, SamplingIsReproducibleBySeed) {
  const std::string args = "--model " + Model() +
                           " --prompt 'Lily and Tom' --max-tokens 20 --temperature 1.0 --top-p 0.9 --threads 1";
  const Result a = RunGenerate(args + " --seed 5", dir_);
  const Result b = RunGenerate(args + " --seed 5", dir_);
  ASSERT_EQ(a.rc, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_THAT(a.out, StartsWith("Lily and Tom"));
}

TEST_F(KvsGenerate, ReportsErrorsWithoutCrashing) {
  Result r = RunGenerate("--prompt x", dir_);
  EXPECT_NE(r.rc, 0);
  EXPECT_THAT(r.err, HasSubstr("--model is required"));
  r = RunGenerate("--model " + (dir_ / "missing.gguf").string() + " --prompt x", dir_);
  EXPECT_NE(r.rc, 0);
  EXPECT_THAT(r.err, HasSubstr("No such file"));
  r = RunGenerate("--model " + Model() + " --prompt x --chat", dir_);
  EXPECT_NE(r.rc, 0);
  EXPECT_THAT(r.err, HasSubstr("chat template"));
  r = RunGenerate("--bogus", dir_);
  EXPECT_EQ(r.rc >> 8, 2);
}

}  // namespace
}  // namespace kvs
