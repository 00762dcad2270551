// Runs `kvs-bench quality` on stories260K with a few prompts: lossless codecs must score exactly
// TA 1 and Δppl 0, every metric must be present in the JSON, and prompts are drawn reproducibly.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/testing/test_data.h"

namespace kvs {
namespace {

nlohmann::json RunBench(const std::string& extra, const std::filesystem::path& json) {
  const std::string data = ::kvs::testing::TestDataDir();
  const std::string cmd = std::string(KVS_BENCH_BIN) + " quality --model " + data +
                          "/models/stories260K.gguf --text " + data +
                          "/text/wikitext-2-raw-test-excerpt.txt --prompts 3 --min-tokens 32 "
                          "--max-tokens 64 --threads 1 --free-run 8 --bootstrap 200 --json " +
                          json.string() + " " + extra + " > /dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(json);
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

TEST(QualityBench, LosslessCodecsAgreeExactlyAndReportEveryMetric) {
  const auto dir = std::filesystem::temp_directory_path() / ("kvs_quality_bench_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const nlohmann::json a =
      RunBench("--codecs identity,lossless_zstd,uniform_int8,topk_prune_50", dir / "a.json");
  ASSERT_FALSE(a.is_discarded());
  ASSERT_EQ(a["codecs"].size(), 4u);
  ASSERT_EQ(a["prompts"].size(), 3u);
  for (const auto& c : a["codecs"]) {
    const std::string name = c["codec"];
    ASSERT_FALSE(c.contains("error")) << name;
    for (const char* k : {"ratio", "key_cosine", "value_cosine", "key_mse", "value_mse",
                          "token_agreement", "delta_ppl", "free_run_agreement"}) {
      ASSERT_TRUE(c.contains(k)) << name << " " << k;
      EXPECT_EQ(c[k]["per_prompt"].size(), 3u) << name << " " << k;
      EXPECT_LE(c[k]["ci95"][0].get<double>(), c[k]["mean"].get<double>()) << name << " " << k;
      EXPECT_GE(c[k]["ci95"][1].get<double>(), c[k]["mean"].get<double>()) << name << " " << k;
    }
    if (name == "identity" || name == "lossless_zstd") {
      EXPECT_EQ(c["token_agreement"]["mean"].get<double>(), 1.0) << name;
      EXPECT_EQ(c["delta_ppl"]["mean"].get<double>(), 0.0) << name;
      EXPECT_EQ(c["free_run_agreement"]["mean"].get<double>(), 1.0) << name;
      EXPECT_EQ(c["key_cosine"]["mean"].get<double>(), 1.0) << name;
    }
    if (name == "topk_prune_50") {
      EXPECT_GT(c["evicted_fraction"]["mean"].get<double>(), 0.4);  // masked, not zero-filled
    }
  }
  // Same seed, same prompts; zero-fill evicts nothing.
  const nlohmann::json b = RunBench("--codecs topk_prune_50 --prune-fill zero", dir / "b.json");
  ASSERT_FALSE(b.is_discarded());
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(a["prompts"][i]["tokens"], b["prompts"][i]["tokens"]);
  EXPECT_EQ(b["codecs"][0]["evicted_fraction"]["mean"].get<double>(), 0.0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvs
