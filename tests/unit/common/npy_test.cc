#include "common/npy/npy.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

namespace kvs {
namespace {

TEST(Npy, WriteThenReadRoundTrips) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("kvs_npy_test_" + std::to_string(getpid()) + ".npy")).string();
  std::vector<uint8_t> data(2 * 3 * 4 * 2);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(WriteNpy(path, "<f2", {2, 3, 4}, data).ok());
  auto a = ReadNpy(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dtype, "<f2");
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(a->data, data);
  std::remove(path.c_str());
}

TEST(Npy, RejectsTruncatedAndMalformed) {
  EXPECT_FALSE(ParseNpy({}).ok());
  const std::string hdr("\x93NUMPY\x01\x00", 8);
  std::string h = "{'descr': '<f2', 'fortran_order': False, 'shape': (4, 4), }";
  std::string file = hdr + std::string(1, static_cast<char>(h.size())) + std::string(1, '\0') + h;
  std::vector<uint8_t> bytes(file.begin(), file.end());
  EXPECT_FALSE(ParseNpy(bytes).ok());  // no data
  bytes.resize(bytes.size() + 32);
  EXPECT_TRUE(ParseNpy(bytes).ok());
  bytes.push_back(0);
  EXPECT_FALSE(ParseNpy(bytes).ok());  // one byte too many
  std::string bad = hdr + std::string(1, 200) + std::string(1, '\0') + "{";
  EXPECT_FALSE(ParseNpy(std::vector<uint8_t>(bad.begin(), bad.end())).ok());
}

}  // namespace
}  // namespace kvs
