#include "tests/integration/transport_matrix.h"

#include "services/transfer/tcp/tcp_transport.h"
#if defined(KVS_TEST_WITH_UCX)
#include "services/transfer/ucx/ucx_transport.h"
#endif

namespace kvs::transfer::testing {

std::string CaseName(TransportCase c) {
  switch (c) {
    case TransportCase::kTcp: return "Tcp";
    case TransportCase::kUcxTcp: return "UcxTcp";
    case TransportCase::kUcxShm: return "UcxShm";
    case TransportCase::kUcxSelf: return "UcxSelf";
  }
  return "?";
}

std::vector<TransportCase> AllTransportCases() {
  std::vector<TransportCase> v = CrossProcessTransportCases();
#if defined(KVS_TEST_WITH_UCX)
  v.push_back(TransportCase::kUcxSelf);
#endif
  return v;
}

std::vector<TransportCase> CrossProcessTransportCases() {
  std::vector<TransportCase> v = {TransportCase::kTcp};
#if defined(KVS_TEST_WITH_UCX)
  v.push_back(TransportCase::kUcxTcp);
  v.push_back(TransportCase::kUcxShm);
#endif
  return v;
}

absl::StatusOr<TransportCase> ParseCase(const std::string& name) {
  for (TransportCase c : {TransportCase::kTcp, TransportCase::kUcxTcp, TransportCase::kUcxShm,
                          TransportCase::kUcxSelf}) {
    if (CaseName(c) == name) return c;
  }
  return absl::InvalidArgumentError("unknown transport case " + name);
}

std::vector<std::string> ExpectedLanes(TransportCase c) {
  switch (c) {
    case TransportCase::kTcp: return {"tcp"};
    case TransportCase::kUcxTcp: return {"tcp"};
    case TransportCase::kUcxShm: return {"posix", "sysv"};
    case TransportCase::kUcxSelf: return {"self"};
  }
  return {};
}

absl::StatusOr<std::shared_ptr<Transport>> MakeTransport(TransportCase c) {
  if (c == TransportCase::kTcp) {
    TcpTransportOptions o;
    o.streams = 2;
    return std::shared_ptr<Transport>(CreateTcpTransport(o));
  }
#if defined(KVS_TEST_WITH_UCX)
  UcxTransportOptions o;
  switch (c) {
    case TransportCase::kUcxTcp:
      o.tls = "tcp";
      o.net_devices = "lo";
      o.require_transport = "tcp";
      break;
    case TransportCase::kUcxShm:
      o.tls = "shm";
      o.require_transport = "posix,sysv,cma";
      break;
    case TransportCase::kUcxSelf:
      o.tls = "self";
      o.require_transport = "self";
      break;
    default:
      break;
  }
  auto t = CreateUcxTransport(o);
  if (!t.ok()) return t.status();
  return std::shared_ptr<Transport>(std::move(*t));
#else
  return absl::UnimplementedError("built without UCX");
#endif
}

absl::StatusOr<TransportPair> MakeTransportPair(TransportCase c) {
  TransportPair p;
  auto r = MakeTransport(c);
  if (!r.ok()) return r.status();
  p.receiver = *r;
  if (c == TransportCase::kUcxSelf) {
    p.sender = p.receiver;
    return p;
  }
  auto s = MakeTransport(c);
  if (!s.ok()) return s.status();
  p.sender = *s;
  return p;
}

}  // namespace kvs::transfer::testing
