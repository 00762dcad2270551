// UCX-specific behaviour: the transport UCX actually selected is reported, and require_transport
// refuses anything else (no silent fallback).
#include "services/transfer/ucx/ucx_transport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>

#include <thread>
#include <vector>

#include "services/transfer/crc32c.h"
#include "tests/testing/status_matchers.h"

namespace kvs::transfer {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

ConnectionOptions AcceptAll() {
  ConnectionOptions o;
  o.validator = [](const FrameHeader&) { return absl::OkStatus(); };
  o.recv_buffer_bytes = 4096;
  o.recv_buffers = 2;
  return o;
}

TEST(UcxTransport, ReportsTheLaneUcxSelected) {
  UcxTransportOptions o;
  o.tls = "tcp";
  o.net_devices = "lo";
  KVS_ASSERT_OK_AND_ASSIGN(auto rx, CreateUcxTransport(o));
  KVS_ASSERT_OK_AND_ASSIGN(auto tx, CreateUcxTransport(o));
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, rx->Listen());
  KVS_ASSERT_OK_AND_ASSIGN(auto conn, tx->Connect(listener->endpoint(), AcceptAll(), absl::Seconds(10)));
  KVS_ASSERT_OK_AND_ASSIGN(auto peer, listener->Accept(AcceptAll(), absl::Seconds(10)));
  EXPECT_EQ(conn->info().kind, "ucx");
  EXPECT_EQ(conn->info().lane, "tcp");
  EXPECT_THAT(conn->info().detail, HasSubstr("tcp/lo"));
  EXPECT_EQ(peer->info().lane, "tcp");
}

TEST(UcxTransport, RequireTransportRefusesAnyOtherSelection) {
  UcxTransportOptions o;
  o.tls = "shm";               // UCX will pick shared memory...
  o.require_transport = "tcp";  // ...which this deployment forbids
  KVS_ASSERT_OK_AND_ASSIGN(auto rx, CreateUcxTransport(o));
  KVS_ASSERT_OK_AND_ASSIGN(auto tx, CreateUcxTransport(o));
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, rx->Listen());
  EXPECT_THAT(tx->Connect(listener->endpoint(), AcceptAll(), absl::Seconds(10)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr("require_transport is 'tcp'"), HasSubstr("memory"))));
}

TEST(UcxTransport, RejectsMalformedEndpointsAndConfig) {
  UcxTransportOptions o;
  o.tls = "tcp";
  KVS_ASSERT_OK_AND_ASSIGN(auto t, CreateUcxTransport(o));
  EXPECT_THAT(t->Connect("not-hex", AcceptAll(), absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hex")));
  UcxTransportOptions bad;
  bad.config = {{"RNDV_THRESH", "banana"}};
  EXPECT_THAT(CreateUcxTransport(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RNDV_THRESH=banana")));
}

TEST(UcxTransport, AcceptTimesOutWithoutAPeer) {
  UcxTransportOptions o;
  o.tls = "tcp";
  KVS_ASSERT_OK_AND_ASSIGN(auto t, CreateUcxTransport(o));
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, t->Listen());
  EXPECT_THAT(listener->Accept(AcceptAll(), absl::Milliseconds(10)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
}

// A sealed chunk frame whose payload is `payload` (validator accepts anything well-formed).
FrameHeader MakeFrame(const Session& s, uint32_t chunk, absl::Span<const uint8_t> payload) {
  FrameHeader h = MakeChunkHeader(s, chunk, payload.size(), Crc32c(payload.data(), payload.size()));
  SealFrameHeader(&h);
  return h;
}

Session SmallSession() {
  CodecRegistry r = CodecRegistry::Builtin();
  auto codec = r.Create("identity").value();
  SessionParams p;
  p.geom = {8, 1, 4, 8};
  return NegotiateSession(p, *codec).value();
}

// Regression (issue 5, daemons): a connector that sends right after Connect while the acceptor is
// inside Accept must not see "endpoint is not connected" — taking the hello and registering the
// connection happen in one progress-thread step.
TEST(UcxTransport, FramesSentWhileTheAcceptorAcceptsAllArrive) {
  const Session s = SmallSession();
  UcxTransportOptions o;
  o.tls = "tcp";
  o.net_devices = "lo";
  KVS_ASSERT_OK_AND_ASSIGN(auto rx, CreateUcxTransport(o));
  KVS_ASSERT_OK_AND_ASSIGN(auto tx, CreateUcxTransport(o));
  std::vector<uint8_t> payload(s.chunks[0].max_payload_bytes, 7);
  for (int round = 0; round < 20; ++round) {
    KVS_ASSERT_OK_AND_ASSIGN(auto listener, rx->Listen());
    ConnectionOptions opts = AcceptAll();
    opts.recv_buffers = 8;
    opts.max_inflight_sends = 8;
    KVS_ASSERT_OK_AND_ASSIGN(auto conn, tx->Connect(listener->endpoint(), opts, absl::Seconds(10)));
    std::atomic<int> sent_ok{0};
    std::thread sender([&] {
      for (uint32_t i = 0; i < 8; ++i) {
        ASSERT_THAT(conn->Send(MakeFrame(s, i, payload), payload, [&](const SendResult& r) {
          if (r.status.ok()) ++sent_ok;
        }), IsOk());
      }
    });
    auto peer = listener->Accept(opts, absl::Seconds(10));
    EXPECT_THAT(peer, IsOk());
    for (int i = 0; peer.ok() && i < 8; ++i) {
      absl::StatusOr<ReceivedFrame> f = (*peer)->Receive(absl::Seconds(10));
      EXPECT_THAT(f, IsOk()) << "round " << round << " frame " << i;
      if (!f.ok()) break;
      EXPECT_EQ(f->header.chunk_index, static_cast<uint32_t>(i)) << "round " << round;
    }
    sender.join();
    EXPECT_THAT(conn->status(), IsOk()) << "round " << round;
    if (::testing::Test::HasFailure()) break;
  }
}

// Every Listener of a transport shares its worker; a peer reaches the Listener it dialled.
TEST(UcxTransport, EachListenerAcceptsOnlyItsOwnPeers) {
  const Session s = SmallSession();
  UcxTransportOptions o;
  o.tls = "tcp";
  o.net_devices = "lo";
  KVS_ASSERT_OK_AND_ASSIGN(auto rx, CreateUcxTransport(o));
  KVS_ASSERT_OK_AND_ASSIGN(auto tx, CreateUcxTransport(o));
  KVS_ASSERT_OK_AND_ASSIGN(auto a, rx->Listen());
  KVS_ASSERT_OK_AND_ASSIGN(auto b, rx->Listen());
  EXPECT_NE(a->endpoint(), b->endpoint());
  std::vector<uint8_t> payload(s.chunks[0].max_payload_bytes, 1);
  KVS_ASSERT_OK_AND_ASSIGN(auto to_b, tx->Connect(b->endpoint(), AcceptAll(), absl::Seconds(10)));
  KVS_ASSERT_OK(to_b->Send(MakeFrame(s, 2, payload), payload, nullptr));
  KVS_ASSERT_OK_AND_ASSIGN(auto to_a, tx->Connect(a->endpoint(), AcceptAll(), absl::Seconds(10)));
  KVS_ASSERT_OK(to_a->Send(MakeFrame(s, 1, payload), payload, nullptr));
  KVS_ASSERT_OK_AND_ASSIGN(auto at_a, a->Accept(AcceptAll(), absl::Seconds(10)));
  KVS_ASSERT_OK_AND_ASSIGN(ReceivedFrame fa, at_a->Receive(absl::Seconds(10)));
  EXPECT_EQ(fa.header.chunk_index, 1u);
  KVS_ASSERT_OK_AND_ASSIGN(auto at_b, b->Accept(AcceptAll(), absl::Seconds(10)));
  KVS_ASSERT_OK_AND_ASSIGN(ReceivedFrame fb, at_b->Receive(absl::Seconds(10)));
  EXPECT_EQ(fb.header.chunk_index, 2u);
}

}  // namespace
}  // namespace kvs::transfer
