// tests/integration/transport_matrix.h — the transports every integration test body runs over
// (STYLE.md practice 10: one body, value-parameterised over {Tcp, UcxTcp, UcxShm, UcxSelf}).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/transfer/transport.h"

namespace kvs::transfer::testing {

enum class TransportCase { kTcp, kUcxTcp, kUcxShm, kUcxSelf };

std::string CaseName(TransportCase c);
// Every case this build supports (the UCX cases only with KVS_WITH_UCX).
std::vector<TransportCase> AllTransportCases();
// Cases that work between two processes (UcxSelf is in-process only).
std::vector<TransportCase> CrossProcessTransportCases();
absl::StatusOr<TransportCase> ParseCase(const std::string& name);

// A sending and a receiving transport for `c` (UcxSelf: the same instance twice — self only
// reaches its own worker). require_transport is set, so a silent fallback fails the test.
struct TransportPair {
  std::shared_ptr<Transport> sender;
  std::shared_ptr<Transport> receiver;
};
absl::StatusOr<TransportPair> MakeTransportPair(TransportCase c);
absl::StatusOr<std::shared_ptr<Transport>> MakeTransport(TransportCase c);

// The TransportInfo::lane values acceptable for `c`.
std::vector<std::string> ExpectedLanes(TransportCase c);

}  // namespace kvs::transfer::testing
