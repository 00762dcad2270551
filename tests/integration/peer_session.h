// tests/integration/peer_session.h — the session the peer-death tests and their helper process
// agree on (identity codec, [layers, 2, 256, 128], one layer per chunk).
#pragma once

#include <string>

#include "absl/strings/escaping.h"
#include "services/transfer/frame.h"

namespace kvs::transfer::testing {

inline KvGeometry PeerGeometry(int64_t layers) { return {layers, 2, 256, 128}; }

inline std::string TokenHex(const SessionToken& t) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(t.data()), t.size()));
}

inline absl::StatusOr<Session> MakePeerSession(const Codec& codec, uint64_t id,
                                               const std::string& token_hex, int64_t layers) {
  const std::string bytes = absl::HexStringToBytes(token_hex);
  SessionParams p;
  if (bytes.size() != p.token.size()) return absl::InvalidArgumentError("token must be 32 hex digits");
  std::copy(bytes.begin(), bytes.end(), p.token.begin());
  p.session_id = id;
  p.request_id = 1;
  p.geom = PeerGeometry(layers);
  return NegotiateSession(p, codec);
}

}  // namespace kvs::transfer::testing
