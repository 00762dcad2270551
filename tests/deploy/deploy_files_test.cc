// The deployment files, checked with real tools rather than by eye:
//   - deploy/docker-compose.yml with Debian's docker-compose (`config -q` needs no Docker engine),
//     default services and the `shaped` profile; a broken copy is rejected (the check can fail);
//   - every config the compose file mounts exists under deploy/config/ and loads in the daemon
//     binary that reads it (`--config F --dump-config`: the daemons' own loader; the library-level
//     load + validate of every file is deploy_configs_test);
//   - docker/Dockerfile and docker/Dockerfile.cuda pass hadolint (docker/hadolint.yaml), which
//     rejects a broken Dockerfile;
//   - kvs-health against a real kvs-decode: 0 when SERVING, 1 unknown service / nothing listening,
//     2 bad options;
//   - the shell scripts parse.
// docker-compose and hadolint come from scripts/setup; without them these tests fail and say so.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/deploy/deploy_testing.h"
#include "tests/integration/daemons/daemon_process.h"

namespace kvs::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
std::string Compose() { return SourceDir() + "/deploy/docker-compose.yml"; }

// hadolint: the project's .venv (scripts/setup), else one on PATH.
std::string Hadolint() {
  const std::string venv = SourceDir() + "/.venv/bin/hadolint";
  if (::access(venv.c_str(), X_OK) == 0) return venv;
  return FindTool("hadolint");
}
bool HaveDockerCompose() {
  return RunProcess({"/bin/sh", "-c", "command -v docker-compose"}, absl::Seconds(10)).exit_code == 0;
}

TEST(DockerCompose, ValidatesWithDockerComposeConfig) {
  ASSERT_TRUE(HaveDockerCompose()) << "docker-compose is missing: run scripts/setup";
  ProcessResult r = RunProcess({Which("docker-compose"), "-f", Compose(), "config", "-q"}, absl::Seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The shaped profile adds the tc sidecars; kvs-loadgen has a profile of its own, so that `up`
  // never starts it before the link is shaped (docker-compose 1.29's `config` lists every service
  // whatever the profiles: the profiles themselves are checked in the resolved file).
  r = RunProcess({Which("docker-compose"), "-f", Compose(), "--profile", "shaped", "--profile", "load", "config",
                  "--services"},
                 absl::Seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"prefill", "decode", "loadgen", "shape-prefill", "shape-decode"}) {
    EXPECT_THAT(r.out, HasSubstr(s));
  }
  // The sidecars report healthy once tc has the tbf qdisc in place.
  r = RunProcess({Which("docker-compose"), "-f", Compose(), "--profile", "shaped", "config"}, absl::Seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("grep -q tbf"));
  EXPECT_THAT(r.out, HasSubstr("profiles:\n    - load"));
  EXPECT_THAT(r.out, HasSubstr("profiles:\n    - shaped"));
}

TEST(DockerCompose, ResolvedFileHasTheTopology) {
  ASSERT_TRUE(HaveDockerCompose()) << "docker-compose is missing: run scripts/setup";
  ProcessResult r = RunProcess({Which("docker-compose"), "-f", Compose(), "config"}, absl::Seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Each node on its own address, the addresses the mounted configs name.
  EXPECT_THAT(r.out, HasSubstr("ipv4_address: 10.77.0.11"));
  EXPECT_THAT(r.out, HasSubstr("ipv4_address: 10.77.0.12"));
  EXPECT_THAT(ReadFile(SourceDir() + "/deploy/config/prefill-compose.conf"), HasSubstr("10.77.0.12:50052"));
  EXPECT_THAT(ReadFile(SourceDir() + "/deploy/config/decode-compose.conf"), HasSubstr("data_host = 10.77.0.12"));
  // Healthchecks through grpc.health.v1 (kvs-health), decode before prefill before loadgen.
  EXPECT_THAT(r.out, HasSubstr("kvs-health"));
  EXPECT_THAT(r.out, HasSubstr("condition: service_healthy"));
}

TEST(DockerCompose, BrokenFileIsRejected) {
  ASSERT_TRUE(HaveDockerCompose()) << "docker-compose is missing: run scripts/setup";
  std::string text = ReadFile(Compose());
  const std::string from = "condition: service_healthy";
  ASSERT_NE(text.find(from), std::string::npos);
  text.replace(text.find(from), from.size(), "condition: when_it_feels_like_it");
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("kvs-compose-", getpid());
  fs::create_directories(dir);
  std::ofstream(dir / "docker-compose.yml") << text;
  ProcessResult r = RunProcess({Which("docker-compose"), "-f", (dir / "docker-compose.yml").string(), "config", "-q"},
                               absl::Seconds(60));
  fs::remove_all(dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err + r.out, HasSubstr("when_it_feels_like_it"));
}

// decode* -> kvs-decode, prefill* -> kvs-prefill, loadgen* -> kvs-loadgen.
std::string BinaryFor(const std::string& config_name) {
  for (const char* d : {"decode", "prefill", "loadgen"}) {
    if (absl::StartsWith(config_name, d)) return BinDir() + "/kvs-" + d;
  }
  return "";
}

TEST(DeployConfigFiles, EveryConfigTheComposeFileMountsLoadsInItsDaemon) {
  const std::string text = ReadFile(Compose());
  std::set<std::string> names;
  const std::regex re(R"(/etc/kvshuttle/([A-Za-z0-9_.-]+\.conf))");
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) names.insert((*it)[1]);
  EXPECT_EQ(names, (std::set<std::string>{"decode-compose.conf", "loadgen-compose.conf", "prefill-compose.conf"}));
  for (const std::string& n : names) {
    const std::string path = SourceDir() + "/deploy/config/" + n;
    ASSERT_TRUE(fs::exists(path)) << path;
    ProcessResult r = RunProcess({BinaryFor(n), "--config", path, "--dump-config"}, absl::Seconds(30));
    EXPECT_EQ(r.exit_code, 0) << n << ": " << r.err;
  }
}

TEST(DeployConfigFiles, EveryConfigUnderDeployConfigLoadsInItsDaemonBinary) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(SourceDir() + "/deploy/config")) {
    if (e.path().extension() != ".conf") continue;
    const std::string bin = BinaryFor(e.path().filename().string());
    ASSERT_FALSE(bin.empty()) << e.path() << ": name it decode*, prefill* or loadgen*";
    ProcessResult r = RunProcess({bin, "--config", e.path().string(), "--dump-config"}, absl::Seconds(30));
    EXPECT_EQ(r.exit_code, 0) << e.path() << ": " << r.err;
    ++n;
  }
  EXPECT_GE(n, 8);
  // The loader is strict: an unknown key is an error (exit 2), not ignored.
  const fs::path bad = fs::temp_directory_path() / absl::StrCat("kvs-decode-bad-", getpid(), ".conf");
  std::ofstream(bad) << "listen = 0.0.0.0:50052\nlisten_adress = 1.2.3.4:1\n";
  ProcessResult r = RunProcess({BinDir() + "/kvs-decode", "--config", bad.string(), "--dump-config"}, absl::Seconds(30));
  fs::remove(bad);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("listen_adress"));
}

TEST(Dockerfiles, PassHadolint) {
  const std::string hadolint = Hadolint();
  ASSERT_FALSE(hadolint.empty()) << "hadolint is missing: run scripts/setup (installs it into .venv/)";
  for (const char* f : {"docker/Dockerfile", "docker/Dockerfile.cuda"}) {
    ProcessResult r = RunProcess({hadolint, "--no-color", "--config", SourceDir() + "/docker/hadolint.yaml",
                                  SourceDir() + "/" + f},
                                 absl::Seconds(60));
    EXPECT_EQ(r.exit_code, 0) << f << ":\n" << r.out << r.err;
  }
}

TEST(Dockerfiles, HadolintRejectsABrokenDockerfile) {
  const std::string hadolint = Hadolint();
  ASSERT_FALSE(hadolint.empty()) << "hadolint is missing: run scripts/setup (installs it into .venv/)";
  std::string text = ReadFile(SourceDir() + "/docker/Dockerfile");
  const std::string from = "\nWORKDIR /src";
  ASSERT_NE(text.find(from), std::string::npos);
  text.replace(text.find(from), from.size(), "\nWORKDIRR /src");
  const fs::path bad = fs::temp_directory_path() / absl::StrCat("kvs-Dockerfile-", getpid());
  std::ofstream(bad) << text;
  ProcessResult r = RunProcess({hadolint, "--no-color", "--config", SourceDir() + "/docker/hadolint.yaml",
                                bad.string()},
                               absl::Seconds(60));
  fs::remove(bad);
  EXPECT_NE(r.exit_code, 0);
}

TEST(Dockerfiles, EverythingTheyCopyFromTheTreeExists) {
  // Paths the build stages copy out of the source tree (cp <path> ... in RUN lines).
  for (const char* p : {"scripts/setup", "scripts/fetch-models", "scripts/lib.sh", "docker/kvs-shape",
                        "tests/data/models/stories260K.gguf", "tests/data/text/wikitext-2-raw-test-excerpt.txt"}) {
    EXPECT_TRUE(fs::exists(SourceDir() + "/" + p)) << p;
    for (const char* f : {"docker/Dockerfile", "docker/Dockerfile.cuda"}) {
      EXPECT_THAT(ReadFile(SourceDir() + "/" + f), HasSubstr(p)) << f;
    }
  }
}

// The Debian packages that hold the shared libraries the image's binaries link (readelf NEEDED ->
// the loader's path -> dpkg -S), as "pkg\n" lines.
std::set<std::string> PackagesLinkedBy(const std::vector<std::string>& binaries) {
  std::string list;
  for (const std::string& b : binaries) list += " '" + b + "'";
  const std::string script = absl::StrCat(
      "set -e; for b in", list, "; do readelf -d \"$b\" | awk '/NEEDED/{gsub(/[\\[\\]]/,\"\",$5); print $5}'; done",
      " | sort -u | while read -r l; do",
      "  p=$(ldconfig -p | awk -v l=\"$l\" '$1==l && /x86-64/{print $NF; exit}');",
      "  [ -n \"$p\" ] || { echo \"unresolved $l\"; continue; };",
      "  r=$(readlink -f \"$p\");",
      "  d=$(dpkg -S \"$r\" 2>/dev/null || dpkg -S \"${r#/usr}\" 2>/dev/null || echo \"unowned:$r\");",
      "  echo \"${d%%:*}\";",
      " done | sort -u");
  ProcessResult r = RunProcess({"/bin/sh", "-c", script}, absl::Seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> pkgs;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) pkgs.insert(line);
  }
  return pkgs;
}

// The text of the Dockerfile's stage `stage` (from its FROM to the next FROM).
std::string Stage(const std::string& dockerfile, const std::string& stage) {
  const std::string text = ReadFile(dockerfile);
  const size_t from = text.find(" AS " + stage + "\n");
  if (from == std::string::npos) return "";
  const size_t next = text.find("\nFROM ", from);
  return text.substr(from, next == std::string::npos ? std::string::npos : next - from);
}

TEST(Dockerfiles, RuntimeStageInstallsThePackageOfEveryLibraryTheBinariesLink) {
  ASSERT_EQ(RunProcess({"/bin/sh", "-c", "command -v dpkg && command -v readelf"}, absl::Seconds(10)).exit_code, 0)
      << "needs dpkg and readelf (Debian, binutils)";
  const std::set<std::string> linked = PackagesLinkedBy(
      {BinDir() + "/kvs-decode", BinDir() + "/kvs-prefill", BinDir() + "/kvs-loadgen", KVS_HEALTH_BIN});
  EXPECT_TRUE(linked.count("libtorch1.13")) << "expected the daemons to link Debian's libtorch";
  EXPECT_TRUE(linked.count("libgrpc++1.51"));
  // In debian:12-slim already.
  const std::set<std::string> base = {"libc6", "libgcc-s1", "libstdc++6"};
  const std::string cpu = Stage(SourceDir() + "/docker/Dockerfile", "runtime");
  const std::string cuda = Stage(SourceDir() + "/docker/Dockerfile.cuda", "runtime");
  ASSERT_FALSE(cpu.empty());
  ASSERT_FALSE(cuda.empty());
  for (const std::string& p : linked) {
    EXPECT_FALSE(absl::StartsWith(p, "unresolved") || absl::StartsWith(p, "unowned")) << p;
    if (base.count(p)) continue;
    EXPECT_THAT(cpu, HasSubstr(" " + p + " ")) << "docker/Dockerfile's runtime stage lacks " << p;
    // The CUDA image's libtorch is the torch wheel's (copied from the build stage).
    if (p != "libtorch1.13") {
      EXPECT_THAT(cuda, HasSubstr(" " + p + " ")) << "docker/Dockerfile.cuda's runtime stage lacks " << p;
    }
  }
}

TEST(DeployScripts, Parse) {
  for (const char* s : {"deploy/netns/kvs-netns.sh", "deploy/netns/kvs-netns-pair.sh"}) {
    ProcessResult r = RunProcess({"/bin/bash", "-n", SourceDir() + "/" + s}, absl::Seconds(10));
    EXPECT_EQ(r.exit_code, 0) << s << ": " << r.err;
  }
  ProcessResult r = RunProcess({"/bin/sh", "-n", SourceDir() + "/docker/kvs-shape"}, absl::Seconds(10));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = RunProcess({SourceDir() + "/deploy/netns/kvs-netns-pair.sh", "--transport", "carrier-pigeon"},
                 absl::Seconds(10));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--transport"));
}

TEST(KvsHealth, ServingDaemonIsZeroUnknownServiceAndDeadPortAreOneBadOptionsTwo) {
  const std::string model = SourceDir() + "/tests/data/models/stories260K.gguf";
  auto decode = DaemonProcess::Start({BinDir() + "/kvs-decode", "--listen", "127.0.0.1:0", "--model", model,
                                      "--metrics-port", "-1", "--threads", "1"},
                                     (fs::temp_directory_path() / absl::StrCat("kvs-health-decode-", getpid(), ".log")).string());
  ASSERT_TRUE(decode.ok()) << decode.status();
  const std::string addr = (*decode)->grpc();
  ProcessResult r = RunProcess({KVS_HEALTH_BIN, addr}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SERVING"));
  r = RunProcess({KVS_HEALTH_BIN, "--service", "kvshuttle.v1.Decode", "--quiet", addr}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  r = RunProcess({KVS_HEALTH_BIN, "--service", "kvshuttle.v1.NoSuchThing", addr}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NoSuchThing"));

  // SIGTERM: the daemon drains and exits 0; afterwards nothing answers.
  (*decode)->Signal(SIGTERM);
  EXPECT_EQ((*decode)->Wait(), 0);
  r = RunProcess({KVS_HEALTH_BIN, "--timeout-ms", "500", addr}, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no answer within 500 ms"));

  EXPECT_EQ(RunProcess({KVS_HEALTH_BIN}, absl::Seconds(10)).exit_code, 2);
  EXPECT_EQ(RunProcess({KVS_HEALTH_BIN, "localhost"}, absl::Seconds(10)).exit_code, 2);
  EXPECT_EQ(RunProcess({KVS_HEALTH_BIN, "--timeout-ms", "0", addr}, absl::Seconds(10)).exit_code, 2);
  EXPECT_EQ(RunProcess({KVS_HEALTH_BIN, "--timeout-ms", "soon", addr}, absl::Seconds(10)).exit_code, 2);
  // A deadline past the clock's range is refused, not computed with an overflow.
  EXPECT_EQ(RunProcess({KVS_HEALTH_BIN, "--timeout-ms", "9223372036854775807", addr}, absl::Seconds(10)).exit_code, 2);
}

}  // namespace
}  // namespace kvs::testing
