// UCX-specific behaviour: the transport UCX actually selected is reported, and require_transport
// refuses anything else (no silent fallback).
#include "services/transfer/ucx/ucx_transport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace kvs::transfer
