#include "services/control/api.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace kvs::control {

absl::Status ValidateSampling(const SamplingParams& s) {
  if (!std::isfinite(s.temperature) || s.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.temperature ", s.temperature, " must be finite and >= 0"));
  }
  if (!std::isfinite(s.top_p) || s.top_p < 0 || s.top_p > 1) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_p ", s.top_p, " must be in [0, 1]"));
  }
  return absl::OkStatus();
}

absl::string_view TransportKindName(TransportKind t) {
  switch (t) {
    case TransportKind::kTcp:
      return "tcp";
    case TransportKind::kUcx:
      return "ucx";
    case TransportKind::kUnspecified:
      break;
  }
  return "unspecified";
}

absl::StatusOr<TransportKind> ParseTransportKind(absl::string_view name) {
  if (name == "tcp") return TransportKind::kTcp;
  if (name == "ucx") return TransportKind::kUcx;
  return absl::InvalidArgumentError(absl::StrCat("unknown transport '", name, "' (tcp, ucx)"));
}

}  // namespace kvs::control
