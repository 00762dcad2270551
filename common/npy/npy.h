// common/npy/npy.h — read and write NumPy .npy files (format 1.0/2.0/3.0, C order,
// little-endian fp16 / fp32 / int32 / uint8), the exchange format of kvs-codec and kvs-generate.
//
//   KVS_ASSIGN_OR_RETURN(kvs::NpyArray a, kvs::ReadNpy("K.npy"));   // a.dtype == "<f2"
//   KVS_RETURN_IF_ERROR(kvs::WriteNpy("out.npy", "<f2", {4, 2, 32, 64}, bytes));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvs {

struct NpyArray {
  std::string dtype;            // numpy descr, e.g. "<f2", "<f4", "<i4", "|u1"
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;    // raw little-endian elements, C order

  int64_t elements() const;
};

// Parses a .npy file held in memory; every size is checked against the buffer.
absl::StatusOr<NpyArray> ParseNpy(absl::Span<const uint8_t> bytes);
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);
absl::Status WriteNpy(const std::string& path, const std::string& dtype,
                      const std::vector<int64_t>& shape, absl::Span<const uint8_t> data);

// Size in bytes of one element of a supported descr, or 0 when unsupported.
int NpyItemSize(const std::string& dtype);

}  // namespace kvs
