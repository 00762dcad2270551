// tests/deploy/deploy_testing.h — what the deployment tests share: where the sources and the
// daemon binaries are, and a PATH lookup for the system tools they run.
// Needs KVS_BIN_DIR (tests/deploy/CMakeLists.txt defines it).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/time/time.h"
#include "tests/integration/daemons/daemon_process.h"

namespace kvs::testing {

// The source tree: KVS_SOURCE_DIR (ctest sets it), else the working directory.
inline std::string SourceDir() {
  const char* s = std::getenv("KVS_SOURCE_DIR");
  return s != nullptr ? s : std::filesystem::current_path().string();
}

// The daemon binaries: KVS_TEST_BIN_DIR, else the build's.
inline std::string BinDir() {
  const char* s = std::getenv("KVS_TEST_BIN_DIR");
  return s != nullptr ? s : KVS_BIN_DIR;
}

// `tool`'s full path from PATH ("" when absent).
inline std::string FindTool(const std::string& tool) {
  ProcessResult r = RunProcess({"/bin/sh", "-c", "command -v " + tool}, absl::Seconds(10));
  std::string p = r.out;
  while (!p.empty() && (p.back() == '\n' || p.back() == ' ')) p.pop_back();
  return p;
}

// RunProcess execs without a PATH search: the tool's full path (or the bare name, which then fails
// with exit 127 and a message).
inline std::string Which(const std::string& tool) {
  std::string p = FindTool(tool);
  return p.empty() ? tool : p;
}

}  // namespace kvs::testing
