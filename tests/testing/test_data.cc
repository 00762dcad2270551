#include "tests/testing/test_data.h"

#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/npy/npy.h"
#include "common/status/status.h"

namespace kvs::testing {

std::string TestDataDir() { return KVS_TEST_DATA_DIR; }

absl::StatusOr<std::vector<uint16_t>> LoadF16(const std::string& path, KvGeometry* geom) {
  KVS_ASSIGN_OR_RETURN(NpyArray a, ReadNpy(path));
  if (a.dtype != "<f2" || a.shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": want fp16 [L,H,S,D]"));
  }
  *geom = {a.shape[0], a.shape[1], a.shape[2], a.shape[3]};
  std::vector<uint16_t> out(a.elements());
  std::memcpy(out.data(), a.data.data(), a.data.size());
  return out;
}

namespace {
absl::StatusOr<OwnedKv> LoadPair(const std::string& prefix) {
  OwnedKv kv;
  KvGeometry gv;
  KVS_ASSIGN_OR_RETURN(kv.k, LoadF16(prefix + "_K.npy", &kv.geom));
  KVS_ASSIGN_OR_RETURN(kv.v, LoadF16(prefix + "_V.npy", &gv));
  if (gv != kv.geom) return absl::InvalidArgumentError(prefix + ": K and V shapes differ");
  return kv;
}
}  // namespace

absl::StatusOr<OwnedKv> LoadGoldenInput(const std::string& tag) {
  return LoadPair(absl::StrCat(TestDataDir(), "/golden/", tag));
}

absl::StatusOr<OwnedKv> LoadGoldenOutput(const std::string& tag, const std::string& codec) {
  return LoadPair(absl::StrCat(TestDataDir(), "/golden/", tag, "_", codec));
}

absl::StatusOr<std::vector<GoldenEntry>> LoadGoldenIndex() {
  std::ifstream f(TestDataDir() + "/golden/index.json");
  if (!f) return absl::NotFoundError("golden/index.json missing");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  // The file is a flat list of objects with fixed keys; a regex per object is enough here.
  const std::regex obj(
      R"re(\{\s*"input":\s*"([^"]+)",\s*"codec":\s*"([^"]+)",\s*"data_bytes":\s*(\d+),\s*"reference_ratio_incl_json":\s*([0-9.eE+-]+)\s*\})re");
  std::vector<GoldenEntry> out;
  for (std::sregex_iterator it(text.begin(), text.end(), obj), end; it != end; ++it) {
    out.push_back({(*it)[1], (*it)[2], std::stoll((*it)[3]), std::stod((*it)[4])});
  }
  if (out.empty()) return absl::InvalidArgumentError("golden/index.json: no entries parsed");
  return out;
}

std::vector<std::string> GoldenTags() {
  return {"s42_4x2x37x64", "s7_3x2x130x128", "s123_2x4x50x96"};
}

}  // namespace kvs::testing
