// kvs_transfer_peer — a helper process for the peer-death tests: one side of a KV transfer that
// stalls mid-way and waits to be killed.
//
//   kvs_transfer_peer --case=Tcp --role=send --endpoint=127.0.0.1:4000 --session=ID --token=HEX
//                     --layers=8 --stall-after=2
//   kvs_transfer_peer --case=UcxShm --role=recv --session=ID --token=HEX --layers=8 --stall-after=2
//
// send: connects, sends the first `stall-after` layers' chunks, prints "stalled", blocks.
// recv: listens, prints "endpoint <endpoint>", accepts, takes `stall-after` frames, prints
//       "stalled", then stops reading and blocks.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "common/log/log.h"
#include "common/synth/synthetic_kv.h"
#include "services/transfer/pipeline.h"
#include "tests/integration/peer_session.h"
#include "tests/integration/transport_matrix.h"

namespace kvs::transfer::testing {
namespace {

int Fail(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "kvs_transfer_peer: %s: %s\n", what.c_str(), s.ToString().c_str());
  return 1;
}

int Main(int argc, char** argv) {
  ConfigureLogging("warn");  // logs on stderr; stdout carries the protocol lines
  std::string case_name, role, endpoint, token_hex;
  uint64_t session_id = 0;
  int64_t layers = 8, stall_after = 2;
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    auto value = [&](absl::string_view key, std::string* out) {
      if (!absl::StartsWith(a, key)) return false;
      *out = std::string(a.substr(key.size()));
      return true;
    };
    std::string v;
    if (value("--case=", &case_name) || value("--role=", &role) || value("--endpoint=", &endpoint) ||
        value("--token=", &token_hex)) {
      continue;
    }
    if (value("--session=", &v) && absl::SimpleAtoi(v, &session_id)) continue;
    if (value("--layers=", &v) && absl::SimpleAtoi(v, &layers)) continue;
    if (value("--stall-after=", &v) && absl::SimpleAtoi(v, &stall_after)) continue;
    std::fprintf(stderr, "kvs_transfer_peer: bad argument %s\n", argv[i]);
    return 2;
  }
  auto c = ParseCase(case_name);
  if (!c.ok()) return Fail("case", c.status());
  auto transport = MakeTransport(*c);
  if (!transport.ok()) return Fail("transport", transport.status());
  CodecRegistry registry = CodecRegistry::Builtin();
  auto codec = registry.Create("identity");
  if (!codec.ok()) return Fail("codec", codec.status());
  auto session = MakePeerSession(**codec, session_id, token_hex, layers);
  if (!session.ok()) return Fail("session", session.status());
  FrameGate gate;
  gate.Register(std::make_shared<Session>(*session));
  ConnectionOptions opts;
  opts.validator = [&gate](const FrameHeader& h) { return gate.Check(h); };
  opts.recv_buffer_bytes = session->max_payload_bytes();
  opts.recv_buffers = 2;
  opts.max_inflight_sends = 2;

  if (role == "send") {
    auto conn = (*transport)->Connect(endpoint, opts, absl::Seconds(20));
    if (!conn.ok()) return Fail("connect", conn.status());
    OwnedKv kv = MakeSyntheticKv(session->geom, 1);
    LayerProgress progress;
    KvSender sender(conn->get(), &gate, codec->get(), {});
    std::thread t([&] { (void)sender.Send(*session, kv.view(), &progress); });
    progress.MarkReady(stall_after);
    std::printf("stalled\n");
    std::fflush(stdout);
    for (;;) pause();  // killed here
  }
  if (role == "recv") {
    auto listener = (*transport)->Listen();
    if (!listener.ok()) return Fail("listen", listener.status());
    std::printf("endpoint %s\n", (*listener)->endpoint().c_str());
    std::fflush(stdout);
    auto conn = (*listener)->Accept(opts, absl::Seconds(20));
    if (!conn.ok()) return Fail("accept", conn.status());
    std::vector<ReceivedFrame> held;  // hold the buffers: the pool stays full
    for (int64_t i = 0; i < stall_after; ++i) {
      auto f = (*conn)->Receive(absl::Seconds(20));
      if (!f.ok()) return Fail("receive", f.status());
      held.push_back(std::move(*f));
    }
    std::printf("stalled\n");
    std::fflush(stdout);
    for (;;) pause();
  }
  std::fprintf(stderr, "kvs_transfer_peer: --role must be send or recv\n");
  return 2;
}

}  // namespace
}  // namespace kvs::transfer::testing

int main(int argc, char** argv) { return kvs::transfer::testing::Main(argc, argv); }
