#include "absl/strings/string_view.h"
#include "common/npy/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status/status.h"

namespace kvs {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

// Extracts the value text of `'key': value` from a numpy header dict.
absl::StatusOr<absl::string_view> DictValue(absl::string_view header, absl::string_view key) {
  const std::string needle = absl::StrCat("'", key, "':");
  const size_t pos = header.find(needle);
  if (pos == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("npy header lacks '", key, "'"));
  }
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(header.substr(pos + needle.size()));
  size_t end;
  if (!rest.empty() && rest[0] == '(') {
    end = rest.find(')');
    if (end == absl::string_view::npos) return absl::InvalidArgumentError("npy header: bad shape");
    return rest.substr(0, end + 1);
  }
  end = rest.find_first_of(",}");
  if (end == absl::string_view::npos) return absl::InvalidArgumentError("npy header: bad dict");
  return absl::StripAsciiWhitespace(rest.substr(0, end));
}

}  // namespace

int NpyItemSize(const std::string& dtype) {
  if (dtype == "<f2") return 2;
  if (dtype == "<f4" || dtype == "<i4" || dtype == "<u4") return 4;
  if (dtype == "|u1" || dtype == "|i1") return 1;
  return 0;
}

int64_t NpyArray::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<NpyArray> ParseNpy(absl::Span<const uint8_t> bytes) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), kMagic, 6) != 0) {
    return absl::InvalidArgumentError("not a .npy file (bad magic)");
  }
  const uint8_t major = bytes[6];
  size_t header_len, offset;
  if (major == 1) {
    header_len = bytes[8] | (size_t{bytes[9]} << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return absl::InvalidArgumentError("truncated .npy header");
    header_len = bytes[8] | (size_t{bytes[9]} << 8) | (size_t{bytes[10]} << 16) |
                 (size_t{bytes[11]} << 24);
    offset = 12;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported .npy version ", int{major}));
  }
  if (header_len > bytes.size() - offset) return absl::InvalidArgumentError("truncated .npy header");
  const absl::string_view header(reinterpret_cast<const char*>(bytes.data() + offset), header_len);

  NpyArray out;
  KVS_ASSIGN_OR_RETURN(absl::string_view descr, DictValue(header, "descr"));
  out.dtype = std::string(absl::StripSuffix(absl::StripPrefix(descr, "'"), "'"));
  if (NpyItemSize(out.dtype) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported .npy dtype ", out.dtype));
  }
  KVS_ASSIGN_OR_RETURN(absl::string_view order, DictValue(header, "fortran_order"));
  if (order != "False") return absl::InvalidArgumentError(".npy in Fortran order is unsupported");
  KVS_ASSIGN_OR_RETURN(absl::string_view shape, DictValue(header, "shape"));
  shape = absl::StripPrefix(absl::StripSuffix(shape, ")"), "(");
  int64_t n = 1;
  for (absl::string_view part : absl::StrSplit(shape, ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0 || d > (int64_t{1} << 40)) {
      return absl::InvalidArgumentError(absl::StrCat(".npy: bad dimension '", part, "'"));
    }
    out.shape.push_back(d);
    n *= d;
    if (n > (int64_t{1} << 40)) return absl::InvalidArgumentError(".npy: array too large");
  }
  const size_t want = static_cast<size_t>(n) * NpyItemSize(out.dtype);
  const size_t data_off = offset + header_len;
  if (bytes.size() - data_off != want) {
    return absl::InvalidArgumentError(absl::StrCat(".npy: data is ", bytes.size() - data_off,
                                                   " bytes, shape and dtype need ", want));
  }
  out.data.assign(bytes.begin() + data_off, bytes.end());
  return out;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  absl::StatusOr<NpyArray> parsed = ParseNpy(bytes);
  if (!parsed.ok()) return Annotate(parsed.status(), path);
  return parsed;
}

absl::Status WriteNpy(const std::string& path, const std::string& dtype,
                      const std::vector<int64_t>& shape, absl::Span<const uint8_t> data) {
  const int item = NpyItemSize(dtype);
  if (item == 0) return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", dtype));
  int64_t n = 1;
  std::string dims;
  for (int64_t d : shape) {
    n *= d;
    absl::StrAppend(&dims, d, ",");
    if (shape.size() > 1) absl::StrAppend(&dims, " ");
  }
  if (shape.size() > 1) dims.pop_back(), dims.pop_back();
  if (static_cast<size_t>(n) * item != data.size()) {
    return absl::InvalidArgumentError("WriteNpy: data size does not match shape");
  }
  std::string header = absl::StrCat("{'descr': '", dtype, "', 'fortran_order': False, 'shape': (",
                                    dims, "), }");
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  if (!f) return absl::PermissionDeniedError(absl::StrCat("cannot create ", path));
  f.write(kMagic, 6);
  const char ver[2] = {1, 0};
  f.write(ver, 2);
  const uint16_t hl = static_cast<uint16_t>(header.size());
  const char hlb[2] = {static_cast<char>(hl & 0xFF), static_cast<char>(hl >> 8)};
  f.write(hlb, 2);
  f.write(header.data(), header.size());
  f.write(reinterpret_cast<const char*>(data.data()), data.size());
  if (!f) return absl::DataLossError(absl::StrCat("write failed: ", path));
  return absl::OkStatus();
}

}  // namespace kvs
