// The command-line parser, as the tools' mains use it.
#include "common/cli/args.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace kvs {
namespace {

std::optional<int> ParseForMain(ArgParser& p, std::vector<std::string> args) {
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return p.ParseForMain(static_cast<int>(argv.size()), argv.data());
}

TEST(ArgParser, ParseForMainGoesOnWithTheValuesSet) {
  int64_t tokens = 1;
  std::string model = "a";
  bool fast = false;
  ArgParser p("prog", "test");
  p.AddInt("tokens", &tokens, "tokens");
  p.AddString("model", &model, "model");
  p.AddBool("fast", &fast, "fast");
  EXPECT_EQ(ParseForMain(p, {"--tokens", "7", "--model=b", "--fast"}), std::nullopt);
  EXPECT_EQ(tokens, 7);
  EXPECT_EQ(model, "b");
  EXPECT_TRUE(fast);
}

TEST(ArgParser, ParseForMainExitsZeroOnHelpAndTwoOnBadInput) {
  int64_t tokens = 1;
  {
    ArgParser p("prog", "test");
    p.AddInt("tokens", &tokens, "tokens");
    EXPECT_EQ(ParseForMain(p, {"--help"}), 0);
  }
  for (std::vector<std::string> bad : {std::vector<std::string>{"--tokens", "x"}, {"--nope"}, {"--tokens"}}) {
    ArgParser p("prog", "test");
    p.AddInt("tokens", &tokens, "tokens");
    EXPECT_EQ(ParseForMain(p, bad), 2) << bad[0];
  }
  EXPECT_EQ(tokens, 1);
}

}  // namespace
}  // namespace kvs
