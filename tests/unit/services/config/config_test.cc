#include "services/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tests/testing/status_matchers.h"

namespace kvs::config {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Options {
  std::string listen = "127.0.0.1:50052";
  std::string model = "";
  std::string transport = "tcp";
  int64_t max_sessions = 64;
  double ratio = 1.5;
  bool pipelined = true;
  std::vector<std::string> peers = {"127.0.0.1:1"};
  std::vector<std::string> codecs;
};

void Bind(ConfigTable& t, Options& o) {
  t.HostPort("listen", &o.listen, "gRPC listen address");
  t.String("model", &o.model, "model file");
  t.Enum("transport", &o.transport, {"tcp", "ucx"}, "data-plane transport");
  t.Int("max_sessions", &o.max_sessions, "sessions at once", 1, 4096);
  t.Double("ratio", &o.ratio, "a ratio", 1, 100);
  t.Bool("pipelined", &o.pipelined, "layer-pipelined handoff");
  t.HostPortList("peers", &o.peers, "decode peers");
  t.StringList("codecs", &o.codecs, "codecs");
}

absl::StatusOr<CommandLine> LoadArgs(ConfigTable& t, std::vector<std::string> args) {
  std::vector<const char*> argv = {"prog"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  return Load(t, static_cast<int>(argv.size()), argv.data());
}

std::string TempFile(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigTable, AbsentKeysKeepTheirDefaults) {
  Options o;
  ConfigTable t("prog", "test");
  Bind(t, o);
  KVS_ASSERT_OK_AND_ASSIGN(CommandLine cl, LoadArgs(t, {}));
  EXPECT_FALSE(cl.help);
  EXPECT_EQ(o.listen, "127.0.0.1:50052");
  EXPECT_EQ(o.max_sessions, 64);
  EXPECT_TRUE(o.pipelined);
  EXPECT_FALSE(t.IsSet("listen"));
}

TEST(ConfigTable, FlagsOverrideTheFileWhereverConfigAppears) {
  Options o;
  ConfigTable t("prog", "test");
  Bind(t, o);
  std::string f = TempFile("a.conf",
                           "# comment\n\nlisten = 0.0.0.0:7000\nmax_sessions = 8\n"
                           "model = \"/m/a b.gguf\"\npeers = h1:1, h2:2\n");
  KVS_ASSERT_OK_AND_ASSIGN(CommandLine cl,
                           LoadArgs(t, {"--max-sessions", "9", "--config", f, "--pipelined=false"}));
  EXPECT_EQ(cl.config_file, f);
  EXPECT_EQ(o.listen, "0.0.0.0:7000");
  EXPECT_EQ(o.max_sessions, 9);
  EXPECT_EQ(o.model, "/m/a b.gguf");
  EXPECT_FALSE(o.pipelined);
  EXPECT_THAT(o.peers, ElementsAre("h1:1", "h2:2"));
}

TEST(ConfigTable, ListFlagsAccumulateOnTheCommandLine) {
  Options o;
  ConfigTable t("prog", "test");
  Bind(t, o);
  KVS_ASSERT_OK(LoadArgs(t, {"--peers", "a:1", "--peers=b:2,c:3"}).status());
  EXPECT_THAT(o.peers, ElementsAre("a:1", "b:2", "c:3"));
}

TEST(ConfigTable, BooleanFlagAloneMeansTrue) {
  Options o;
  o.pipelined = false;
  ConfigTable t("prog", "test");
  Bind(t, o);
  KVS_ASSERT_OK(LoadArgs(t, {"--pipelined"}).status());
  EXPECT_TRUE(o.pipelined);
}

TEST(ConfigTable, PresentButInvalidIsAnError) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"--max-sessions", "0"}, "out of range"},
      {{"--max-sessions", "lots"}, "not an integer"},
      {{"--ratio", "nan"}, "not a finite number"},
      {{"--transport", "rdma"}, "not one of tcp, ucx"},
      {{"--listen", "nohostport"}, "not host:port"},
      {{"--listen", "h:99999"}, "no valid port"},
      {{"--pipelined=maybe"}, "not a boolean"},
      {{"--peers", "a:1,,b:2"}, "empty element"},
      {{"--bogus", "1"}, "unknown option --bogus"},
      {{"--model"}, "needs a value"},
  };
  for (const Case& c : cases) {
    Options o;
    ConfigTable t("prog", "test");
    Bind(t, o);
    EXPECT_THAT(LoadArgs(t, c.args), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.args[0];
  }
}

TEST(ConfigTable, FileErrorsNameTheFileAndLine) {
  Options o;
  ConfigTable t("prog", "test");
  Bind(t, o);
  EXPECT_THAT(t.LoadText("listen = a:1\nmax_sessions = -3\n", "x.conf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x.conf:2: max_sessions")));
  EXPECT_THAT(t.LoadText("listen = a:1\nlisten = b:2\n", "y.conf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("appears twice")));
  EXPECT_THAT(t.LoadText("unknown_key = 1\n", "z.conf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown key")));
  EXPECT_THAT(t.LoadText("just words\n", "w.conf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected 'key = value'")));
  EXPECT_THAT(t.LoadText("model = \"open\n", "q.conf"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unterminated quote")));
}

TEST(ConfigTable, MissingConfigFileIsNotFound) {
  Options o;
  ConfigTable t("prog", "test");
  Bind(t, o);
  EXPECT_THAT(LoadArgs(t, {"--config", "/nonexistent/kvs.conf"}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/kvs.conf")));
}

TEST(ConfigTable, DumpListsEveryKeyAndLoadsBackUnchanged) {
  Options o;
  ConfigTable t("prog", "test");
  Bind(t, o);
  KVS_ASSERT_OK(LoadArgs(t, {"--model", "with # hash", "--codecs", "a,b", "--ratio", "2.25",
                             "--dump-config"})
                    .status());
  std::string dump = t.Dump();
  for (const std::string& key : t.Keys()) EXPECT_THAT(dump, HasSubstr("\n" + key + " = "));
  EXPECT_THAT(dump, HasSubstr("# type: int [1, 4096]; default: 64"));

  Options o2;
  ConfigTable t2("prog", "test");
  Bind(t2, o2);
  KVS_ASSERT_OK(t2.LoadText(dump, "dump"));
  EXPECT_EQ(t2.Dump(), dump.replace(0, 0, ""));  // same effective values
  EXPECT_EQ(o2.model, "with # hash");
  EXPECT_THAT(o2.codecs, ElementsAre("a", "b"));
  EXPECT_EQ(o2.ratio, 2.25);
  EXPECT_EQ(o2.listen, o.listen);
}

TEST(ConfigTable, MetaFlagsAreReported) {
  Options o;
  ConfigTable t("prog", "test");
  Bind(t, o);
  KVS_ASSERT_OK_AND_ASSIGN(CommandLine cl, LoadArgs(t, {"--help", "--dump-config"}));
  EXPECT_TRUE(cl.help);
  EXPECT_TRUE(cl.dump_config);
  EXPECT_THAT(t.Usage(), HasSubstr("--max-sessions V"));
}

TEST(SplitHostPort, AcceptsNamesIpv4AndBracketedIpv6) {
  std::string h;
  int p = -1;
  KVS_ASSERT_OK(SplitHostPort("localhost:80", &h, &p));
  EXPECT_EQ(h, "localhost");
  EXPECT_EQ(p, 80);
  KVS_ASSERT_OK(SplitHostPort("[::1]:0", &h, &p));
  EXPECT_EQ(h, "::1");
  EXPECT_EQ(p, 0);
  EXPECT_THAT(SplitHostPort("::1:80", &h, &p), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("brackets")));
  EXPECT_THAT(SplitHostPort(":80", &h, &p), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty host")));
}

}  // namespace
}  // namespace kvs::config
