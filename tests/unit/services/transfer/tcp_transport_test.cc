// TCP-specific behaviour: streams, and a hand-written peer that proves a rejected header's
// payload is never read (the peer never sends it).
#include "services/transfer/tcp/tcp_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "services/transfer/crc32c.h"
#include "tests/testing/status_matchers.h"

namespace kvs::transfer {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

class TcpTransportTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    registry_ = CodecRegistry::Builtin();
    KVS_ASSERT_OK_AND_ASSIGN(codec_, registry_.Create("identity"));
    SessionParams p;
    p.session_id = 77;
    p.token = RandomSessionToken();
    p.geom = {3, 2, 8, 16};
    KVS_ASSERT_OK_AND_ASSIGN(session_, NegotiateSession(p, *codec_));
    gate_.Register(std::make_shared<Session>(session_));
    opts_.validator = [this](const FrameHeader& h) { return gate_.Check(h); };
    opts_.recv_buffer_bytes = session_.max_payload_bytes();
    opts_.recv_buffers = 2;
  }

  FrameHeader Header(uint32_t chunk, absl::Span<const uint8_t> payload) {
    FrameHeader h = MakeChunkHeader(session_, chunk, payload.size(), Crc32c(payload.data(), payload.size()));
    SealFrameHeader(&h);
    return h;
  }

  CodecRegistry registry_;
  std::unique_ptr<Codec> codec_;
  Session session_;
  FrameGate gate_;
  ConnectionOptions opts_;
};

TEST_P(TcpTransportTest, FramesCrossEveryStreamIntact) {
  TcpTransportOptions to;
  to.streams = GetParam();
  auto transport = CreateTcpTransport(to);
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, transport->Listen());
  std::unique_ptr<Connection> server;
  std::thread acceptor([&] {
    auto c = listener->Accept(opts_, absl::Seconds(10));
    ASSERT_THAT(c, IsOk());
    server = std::move(*c);
  });
  KVS_ASSERT_OK_AND_ASSIGN(auto client, transport->Connect(listener->endpoint(), opts_, absl::Seconds(10)));
  acceptor.join();
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(client->info().detail, HasSubstr(absl::StrCat("tcp ", GetParam())));

  const size_t n = session_.chunks[0].max_payload_bytes;
  std::vector<std::vector<uint8_t>> payloads;
  for (int i = 0; i < 3; ++i) payloads.emplace_back(n, static_cast<uint8_t>(0x30 + i));
  std::atomic<int> done{0};
  for (uint32_t i = 0; i < 3; ++i) {
    ASSERT_THAT(client->Send(Header(i, payloads[i]), payloads[i], [&](const SendResult& r) {
      EXPECT_THAT(r.status, IsOk());
      EXPECT_LE(r.wire_begin_ns, r.wire_end_ns);
      ++done;
    }), IsOk());
  }
  std::vector<bool> seen(3, false);
  for (int k = 0; k < 3; ++k) {
    KVS_ASSERT_OK_AND_ASSIGN(ReceivedFrame f, server->Receive(absl::Seconds(10)));
    const uint32_t i = f.header.chunk_index;
    ASSERT_LT(i, 3u);
    EXPECT_FALSE(seen[i]);
    seen[i] = true;
    EXPECT_THAT(VerifyPayloadCrc(f.header, f.bytes()), IsOk());
    EXPECT_EQ(std::vector<uint8_t>(f.bytes().begin(), f.bytes().end()), payloads[i]);
    EXPECT_LE(f.recv_begin_ns, f.recv_end_ns);
  }
  EXPECT_EQ(server->counters().frames_received, 3u);
  EXPECT_EQ(server->counters().recv_buffers_in_use, 0);
  client.reset();  // peer goes away: the server reports it
  EXPECT_THAT(server->Receive(absl::Seconds(10)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("peer closed")));
  EXPECT_EQ(done.load(), 3);
}

INSTANTIATE_TEST_SUITE_P(Streams, TcpTransportTest, ::testing::Values(1, 3));

// A raw TCP peer: says hello, then writes only what the test hands it.
class RawPeer {
 public:
  explicit RawPeer(const std::string& endpoint) {
    const size_t colon = endpoint.rfind(':');
    int port = 0;
    EXPECT_TRUE(absl::SimpleAtoi(endpoint.substr(colon + 1), &port));
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    uint8_t hello[32] = {};
    const uint32_t magic = 0x4853564Bu;  // "KVSH"
    std::memcpy(hello, &magic, 4);
    hello[4] = 1;   // version
    hello[8] = 1;   // stream count (index 0)
    hello[16] = 9;  // connection nonce
    Write(hello, sizeof hello);
  }
  ~RawPeer() { ::close(fd_); }
  void Write(const void* p, size_t n) { EXPECT_EQ(::send(fd_, p, n, MSG_NOSIGNAL), static_cast<ssize_t>(n)); }

 private:
  int fd_ = -1;
};

class TcpRejectTest : public TcpTransportTest {};

TEST_F(TcpRejectTest, WrongTokenIsRejectedWithoutReadingThePayload) {
  auto transport = CreateTcpTransport();
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, transport->Listen());
  RawPeer peer(listener->endpoint());
  KVS_ASSERT_OK_AND_ASSIGN(auto server, listener->Accept(opts_, absl::Seconds(10)));
  std::vector<uint8_t> payload(session_.chunks[0].max_payload_bytes, 1);
  FrameHeader h = MakeChunkHeader(session_, 0, payload.size(), Crc32c(payload.data(), payload.size()));
  h.token[0] ^= 0xFF;
  SealFrameHeader(&h);
  peer.Write(&h, sizeof h);  // the payload is never sent: reading it would block forever
  EXPECT_THAT(server->Receive(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("token")));
  EXPECT_EQ(server->counters().frames_rejected, 1u);
  EXPECT_EQ(server->counters().payload_bytes_read, 0u);
  EXPECT_EQ(server->counters().recv_buffers_in_use, 0);
}

TEST_F(TcpRejectTest, LengthBeyondGeometryIsRejectedWithoutReadingThePayload) {
  auto transport = CreateTcpTransport();
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, transport->Listen());
  RawPeer peer(listener->endpoint());
  KVS_ASSERT_OK_AND_ASSIGN(auto server, listener->Accept(opts_, absl::Seconds(10)));
  FrameHeader h = MakeChunkHeader(session_, 1, uint64_t{1} << 40, 0);  // a terabyte "payload"
  SealFrameHeader(&h);
  peer.Write(&h, sizeof h);
  EXPECT_THAT(server->Receive(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("payload of")));
  EXPECT_EQ(server->counters().payload_bytes_read, 0u);
}

TEST_F(TcpRejectTest, CorruptHeaderIsDataLoss) {
  auto transport = CreateTcpTransport();
  KVS_ASSERT_OK_AND_ASSIGN(auto listener, transport->Listen());
  RawPeer peer(listener->endpoint());
  KVS_ASSERT_OK_AND_ASSIGN(auto server, listener->Accept(opts_, absl::Seconds(10)));
  FrameHeader h = MakeChunkHeader(session_, 0, session_.chunks[0].max_payload_bytes, 0);
  SealFrameHeader(&h);
  h.layer_end ^= 4;  // bit flip after sealing
  peer.Write(&h, sizeof h);
  EXPECT_THAT(server->Receive(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("header crc")));
}

TEST(TcpTransport, BadEndpointsFail) {
  auto transport = CreateTcpTransport();
  ConnectionOptions o;
  o.validator = [](const FrameHeader&) { return absl::OkStatus(); };
  EXPECT_THAT(transport->Connect("nonsense", o, absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("host:port")));
  EXPECT_THAT(transport->Connect("127.0.0.1:99999", o, absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("port")));
  // A listener that was closed: connection refused.
  std::string ep;
  {
    KVS_ASSERT_OK_AND_ASSIGN(auto l, transport->Listen());
    ep = l->endpoint();
  }
  EXPECT_THAT(transport->Connect(ep, o, absl::Seconds(5)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("refused")));
  ConnectionOptions no_validator;
  EXPECT_THAT(transport->Connect(ep, no_validator, absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("validator")));
}

}  // namespace
}  // namespace kvs::transfer
