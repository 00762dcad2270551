// Every example config under deploy/config/ loads with the daemons' own loader and validates;
// every daemon's --dump-config output loads back unchanged.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "services/config/config.h"
#include "services/decode/decode_options.h"
#include "services/loadgen/loadgen.h"
#include "services/prefill/prefill_options.h"
#include "tests/testing/status_matchers.h"

namespace kvs {
namespace {

using ::kvs::testing::IsOk;

absl::Status LoadAs(const std::string& path) {
  const std::string name = std::filesystem::path(path).filename().string();
  if (absl::StartsWith(name, "decode")) {
    decode::DecodeOptions o;
    config::ConfigTable t("kvs-decode", "");
    decode::BindDecodeOptions(t, &o);
    KVS_RETURN_IF_ERROR(t.LoadFile(path));
    return decode::ValidateDecodeOptions(o);
  }
  if (absl::StartsWith(name, "prefill")) {
    prefill::PrefillOptions o;
    config::ConfigTable t("kvs-prefill", "");
    prefill::BindPrefillOptions(t, &o);
    KVS_RETURN_IF_ERROR(t.LoadFile(path));
    return prefill::ValidatePrefillOptions(o);
  }
  if (absl::StartsWith(name, "loadgen")) {
    loadgen::LoadgenOptions o;
    config::ConfigTable t("kvs-loadgen", "");
    loadgen::BindLoadgenOptions(t, &o);
    KVS_RETURN_IF_ERROR(t.LoadFile(path));
    return loadgen::ValidateLoadgenOptions(o);
  }
  return absl::InvalidArgumentError("name it decode*, prefill* or loadgen* so this test knows its loader");
}

TEST(DeployConfigs, EveryExampleLoadsAndValidates) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(KVS_DEPLOY_CONFIG_DIR)) {
    if (e.path().extension() != ".conf") continue;
    ++n;
    EXPECT_THAT(LoadAs(e.path().string()), IsOk()) << e.path();
  }
  EXPECT_GE(n, 5);
}

template <typename Options, typename Bind>
void ExpectDumpRoundTrips(const std::string& program, Bind bind) {
  Options a;
  config::ConfigTable ta(program, "");
  bind(ta, &a);
  const std::string dump = ta.Dump();
  Options b;
  config::ConfigTable tb(program, "");
  bind(tb, &b);
  ASSERT_THAT(tb.LoadText(dump, "dump"), IsOk()) << program;
  EXPECT_EQ(tb.Dump(), dump) << program;
}

TEST(DeployConfigs, DumpConfigOfEveryToolLoadsBack) {
  ExpectDumpRoundTrips<decode::DecodeOptions>("kvs-decode", decode::BindDecodeOptions);
  ExpectDumpRoundTrips<prefill::PrefillOptions>("kvs-prefill", prefill::BindPrefillOptions);
  ExpectDumpRoundTrips<loadgen::LoadgenOptions>("kvs-loadgen", loadgen::BindLoadgenOptions);
}

TEST(DeployConfigs, AbsentRequiredKeysAreErrorsNotDefaults) {
  decode::DecodeOptions d;
  EXPECT_THAT(decode::ValidateDecodeOptions(d), kvs::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                                       ::testing::HasSubstr("model")));
  prefill::PrefillOptions p;
  p.model = "m.gguf";
  EXPECT_THAT(prefill::ValidatePrefillOptions(p), kvs::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                                         ::testing::HasSubstr("decode")));
}

}  // namespace
}  // namespace kvs
