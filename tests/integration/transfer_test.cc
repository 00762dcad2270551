// One test body over every transport (TCP, UCX over tcp, UCX over shared memory, UCX self): a
// multi-layer KV of realistic structure crosses a real connection through the chunk pipeline and
// arrives bit-exact (identity) or exactly as a local encode/decode of each chunk (every codec);
// faults injected on the real connection fail closed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <thread>

#include "absl/time/clock.h"
#include "common/synth/synthetic_kv.h"
#include "kernels/codec.h"
#include "services/transfer/pipeline.h"
#include "services/transfer/transport.h"
#include "tests/integration/faulty_connection.h"
#include "tests/integration/transport_matrix.h"
#include "tests/testing/status_matchers.h"

namespace kvs::transfer::testing {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using Code = absl::StatusCode;

// Both ends of one real connection, the receiver's side wrapped for fault injection.
struct Link {
  TransportPair transports;
  std::unique_ptr<Listener> listener;
  FrameGate tx_gate, rx_gate;
  std::unique_ptr<Connection> tx, rx;
  std::unique_ptr<FaultyConnection> tx_faulty, rx_faulty;
};

class TransferTest : public ::testing::TestWithParam<TransportCase> {
 protected:
  void SetUp() override {
    registry_ = CodecRegistry::Builtin();
    auto pair = MakeTransportPair(GetParam());
    if (absl::IsUnimplemented(pair.status())) GTEST_SKIP() << pair.status();
    ASSERT_THAT(pair, IsOk());
    link_.transports = *pair;
  }

  absl::StatusOr<Session> MakeSession(const Codec& codec, const KvGeometry& g,
                                      int64_t layers_per_chunk = 1) {
    SessionParams p;
    p.session_id = RandomId();
    p.token = RandomSessionToken();
    p.request_id = 5;
    p.geom = g;
    p.layers_per_chunk = layers_per_chunk;
    return NegotiateSession(p, codec);
  }

  // Connects sender -> receiver with pools sized for `s`.
  void Connect(const Session& s, int recv_buffers = 4, int max_inflight = 4) {
    KVS_ASSERT_OK_AND_ASSIGN(link_.listener, link_.transports.receiver->Listen());
    ConnectionOptions rx_opts;
    rx_opts.validator = [g = &link_.rx_gate](const FrameHeader& h) { return g->Check(h); };
    rx_opts.placer = [g = &link_.rx_gate](const FrameHeader& h, PayloadPlacement* p) { return g->Place(h, p); };
    rx_opts.recv_buffer_bytes = s.max_payload_bytes();
    rx_opts.recv_buffers = recv_buffers;
    rx_opts.max_inflight_sends = 2;
    ConnectionOptions tx_opts;
    tx_opts.validator = [g = &link_.tx_gate](const FrameHeader& h) { return g->Check(h); };
    tx_opts.recv_buffer_bytes = s.max_control_payload_bytes();
    tx_opts.recv_buffers = 2;
    tx_opts.max_inflight_sends = max_inflight;
    // The receiver's session is open before any frame can arrive (as OpenSession does).
    link_.rx_gate.Register(std::make_shared<Session>(s));
    KVS_ASSERT_OK_AND_ASSIGN(link_.tx, link_.transports.sender->Connect(link_.listener->endpoint(),
                                                                         tx_opts, absl::Seconds(20)));
    KVS_ASSERT_OK_AND_ASSIGN(link_.rx, link_.listener->Accept(rx_opts, absl::Seconds(20)));
    link_.tx_faulty = std::make_unique<FaultyConnection>(link_.tx.get());
    link_.rx_faulty = std::make_unique<FaultyConnection>(link_.rx.get());
    const std::vector<std::string> lanes = ExpectedLanes(GetParam());
    EXPECT_THAT(lanes, ::testing::Contains(link_.tx->info().lane)) << link_.tx->info().detail;
    EXPECT_THAT(lanes, ::testing::Contains(link_.rx->info().lane)) << link_.rx->info().detail;
  }

  struct Outcome {
    absl::StatusOr<TransferStats> tx = absl::UnknownError("not run");
    absl::StatusOr<TransferStats> rx = absl::UnknownError("not run");
  };

  Outcome Transfer(const Session& s, const Codec& codec, const KvCacheView& src,
                   const MutableKvCacheView& dst, SenderOptions so = {}, ReceiverOptions ro = {},
                   LayerProgress* progress = nullptr, std::vector<uint8_t>* keep_mask = nullptr) {
    Outcome out;
    ro.abort_drain = absl::Seconds(5);
    KvReceiver receiver(link_.rx_faulty.get(), &link_.rx_gate, &codec, ro);
    std::thread rx_thread([&] { out.rx = receiver.Receive(s, dst, keep_mask); });
    KvSender sender(link_.tx_faulty.get(), &link_.tx_gate, &codec, so);
    out.tx = sender.Send(s, src, progress);
    if (!out.tx.ok()) link_.tx->Close();  // as a failed prefill would: the receiver stops draining
    rx_thread.join();
    EXPECT_EQ(sender.buffers_in_use(), 0);
    EXPECT_EQ(link_.rx->counters().recv_buffers_in_use, 0);
    return out;
  }

  // A frame was rejected and every payload byte read belongs to an accepted frame
  // (with several TCP streams, later chunks may be read before the bad one is seen).
  void ExpectRejectedPayloadUnread(const Session& s) {
    const ConnectionCounters c = link_.rx->counters();
    EXPECT_GE(c.frames_rejected, 1u);
    EXPECT_EQ(c.payload_bytes_read, c.frames_received * s.chunks[0].max_payload_bytes);
  }

  CodecRegistry registry_;
  Link link_;
  const KvGeometry geom_{4, 2, 64, 128};
};

TEST_P(TransferTest, IdentityArrivesBitExactPipelinedAndSequential) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, geom_));
  ASSERT_NO_FATAL_FAILURE(Connect(s));
  OwnedKv src = MakeSyntheticKv(geom_, 11);
  struct Mode {
    bool pipelined, zero_copy_send, zero_copy_recv;
  };
  // In-place and buffered paths mix freely: the bytes on the wire are the same.
  for (Mode m : {Mode{true, true, true}, Mode{false, true, true}, Mode{true, false, true},
                 Mode{true, true, false}, Mode{false, false, false}}) {
    const bool pipelined = m.pipelined;
    SCOPED_TRACE(::testing::Message() << "pipelined " << m.pipelined << " zero-copy send "
                                      << m.zero_copy_send << " recv " << m.zero_copy_recv);
    OwnedKv dst = OwnedKv::Zeros(geom_);
    SenderOptions so;
    so.pipelined = pipelined;
    so.zero_copy_identity = m.zero_copy_send;
    ReceiverOptions ro;
    ro.pipelined = pipelined;
    ro.zero_copy_identity = m.zero_copy_recv;
    // A fresh session per transfer (ids are single-use).
    KVS_ASSERT_OK_AND_ASSIGN(Session t, MakeSession(*codec, geom_));
    link_.rx_gate.Register(std::make_shared<Session>(t));
    Outcome o = Transfer(t, *codec, src.view(), dst.mutable_view(), so, ro);
    ASSERT_THAT(o.tx, IsOk());
    ASSERT_THAT(o.rx, IsOk());
    EXPECT_EQ(dst.k, src.k);
    EXPECT_EQ(dst.v, src.v);
    const TransferStats& st = *o.tx;
    EXPECT_TRUE(st.has_peer_timings);
    EXPECT_EQ(st.chunks, 4);
    EXPECT_EQ(st.bytes_raw, static_cast<uint64_t>(geom_.raw_bytes()));
    EXPECT_EQ(st.bytes_wire, st.bytes_raw + 4 * (kFrameHeaderBytes + 32));
    EXPECT_EQ(st.pipelined, pipelined);
    for (const ChunkTiming& c : st.chunk_timings) {  // every boundary stamped, in order
      EXPECT_LE(c.encode_begin_ns, c.encode_end_ns);
      EXPECT_LE(c.encode_end_ns, c.wire_begin_ns);
      EXPECT_LE(c.wire_begin_ns, c.recv_end_ns);
      EXPECT_LE(c.recv_begin_ns, c.recv_end_ns);
      EXPECT_LE(c.recv_end_ns, c.decode_begin_ns);
      EXPECT_LE(c.decode_begin_ns, c.decode_end_ns);
      EXPECT_GT(c.decode_end_ns, 0);
    }
    EXPECT_GT(st.handoff_ms, 0);
  }
}

TEST_P(TransferTest, EveryCodecDecodesLikeLocalEncodeDecode) {
  OwnedKv src = MakeSyntheticKv(geom_, 23);
  bool connected = false;
  int codecs_run = 0, pruning_run = 0;
  for (const std::string& name : registry_.Names()) {
    auto codec = registry_.Create(name);
    if (absl::IsUnimplemented(codec.status())) continue;  // not landed yet
    ASSERT_THAT(codec, IsOk());
    auto session = MakeSession(**codec, geom_);
    if (absl::IsUnimplemented(session.status())) continue;
    ASSERT_THAT(session, IsOk()) << name;
    if (!connected) {
      // One connection for every codec: its receive buffers fit the largest payload (identity).
      KVS_ASSERT_OK_AND_ASSIGN(auto identity, registry_.Create("identity"));
      KVS_ASSERT_OK_AND_ASSIGN(Session big, MakeSession(*identity, geom_));
      ASSERT_NO_FATAL_FAILURE(Connect(big));
      connected = true;
    }
    link_.rx_gate.Register(std::make_shared<Session>(*session));
    // Expected: each chunk encoded and decoded locally, streaming mode; its keep mask per layer.
    OwnedKv expected = OwnedKv::Zeros(geom_);
    std::vector<uint8_t> expected_mask;
    bool local_ok = true;
    for (const ChunkSpec& c : session->chunks) {
      auto payload = EncodeToVector(**codec, src.view().Layers(c.layer_begin, c.layer_end), nullptr);
      if (absl::IsUnimplemented(payload.status())) {
        local_ok = false;
        break;
      }
      ASSERT_THAT(payload, IsOk()) << name;
      std::vector<uint8_t> mask(static_cast<size_t>(geom_.tokens));
      ASSERT_THAT(DecodeFromVector(**codec, *payload,
                                   expected.mutable_view().Layers(c.layer_begin, c.layer_end), nullptr,
                                   absl::MakeSpan(mask)),
                  IsOk()) << name;
      for (uint32_t l = c.layer_begin; l < c.layer_end; ++l) {
        expected_mask.insert(expected_mask.end(), mask.begin(), mask.end());
      }
    }
    if (!local_ok) continue;
    OwnedKv dst = OwnedKv::Zeros(geom_);
    std::vector<uint8_t> got_mask;
    Outcome o = Transfer(*session, **codec, src.view(), dst.mutable_view(), {}, {}, nullptr, &got_mask);
    ASSERT_THAT(o.tx, IsOk()) << name;
    ASSERT_THAT(o.rx, IsOk()) << name;
    EXPECT_EQ(dst.k, expected.k) << name;
    EXPECT_EQ(dst.v, expected.v) << name;
    // The receiver's keep mask is the local decode's, layer by layer; pruning codecs evict half.
    EXPECT_EQ(got_mask, expected_mask) << name;
    const int64_t evicted = std::count(got_mask.begin(), got_mask.end(), uint8_t{0});
    EXPECT_EQ(evicted, (**codec).info().prunes ? geom_.layers * (geom_.tokens - geom_.tokens / 2) : 0) << name;
    if ((**codec).info().prunes) ++pruning_run;
    EXPECT_GT(o.tx->ratio, 0.0) << name;
    ++codecs_run;
  }
  EXPECT_GE(codecs_run, 3);  // identity and the two lossless codecs at least
  EXPECT_EQ(pruning_run, 2);  // topk_prune_50 and cascade_prune50_int4
}

TEST_P(TransferTest, LayerSlabsLeaveAsTheProducerMarksThemReady) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  const KvGeometry g{5, 2, 32, 128};
  KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, g, /*layers_per_chunk=*/2));
  ASSERT_EQ(s.chunks.size(), 3u);
  ASSERT_NO_FATAL_FAILURE(Connect(s));
  OwnedKv src = MakeSyntheticKv(g, 3);
  OwnedKv dst = OwnedKv::Zeros(g);
  LayerProgress progress;
  std::thread producer([&] {
    for (int64_t l = 1; l <= g.layers; ++l) progress.MarkReady(l);
  });
  Outcome o = Transfer(s, *codec, src.view(), dst.mutable_view(), {}, {}, &progress);
  producer.join();
  ASSERT_THAT(o.tx, IsOk());
  ASSERT_THAT(o.rx, IsOk());
  EXPECT_EQ(dst.k, src.k);
  EXPECT_EQ(dst.v, src.v);
  EXPECT_EQ(o.tx->chunks, 3);
}

TEST_P(TransferTest, FlippedPayloadBitFailsClosedWithCrcMismatch) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, geom_));
  ASSERT_NO_FATAL_FAILURE(Connect(s));
  link_.tx_faulty->FlipPayloadBitOnChunk(2, 8 * 1000 + 3);
  OwnedKv src = MakeSyntheticKv(geom_, 5);
  OwnedKv dst = OwnedKv::Zeros(geom_);
  Outcome o = Transfer(s, *codec, src.view(), dst.mutable_view());
  EXPECT_THAT(o.rx, StatusIs(Code::kDataLoss, HasSubstr("crc32c mismatch")));
  // The sender hears the receiver's abort (or, at worst, loses the connection): never OK.
  EXPECT_THAT(o.tx, AnyOf(StatusIs(Code::kDataLoss, HasSubstr("peer aborted")),
                          StatusIs(Code::kUnavailable, ::testing::_)));
}

TEST_P(TransferTest, ImplausiblePeerTimestampsAreDroppedNotComputedWith) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, geom_));
  ASSERT_NO_FATAL_FAILURE(Connect(s));
  // kDone payload: u32 count, u32 reserved, then per chunk {u32 chunk, u32, 4 x i64 stamps}.
  link_.rx_faulty->RewriteDonePayload([](std::vector<uint8_t>* p) {
    const int64_t huge = std::numeric_limits<int64_t>::min();
    std::memcpy(p->data() + 8 + 8, &huge, sizeof huge);  // chunk 0's recv_begin_ns
  });
  OwnedKv src = MakeSyntheticKv(geom_, 5);
  OwnedKv dst = OwnedKv::Zeros(geom_);
  Outcome o = Transfer(s, *codec, src.view(), dst.mutable_view());
  ASSERT_THAT(o.rx, IsOk());
  ASSERT_THAT(o.tx, IsOk());  // the KV arrived intact: only the stats lose the receiver's side
  EXPECT_FALSE(o.tx->has_peer_timings);
  EXPECT_EQ(o.tx->peer_clock_offset_ns, 0);
  for (const ChunkTiming& t : o.tx->chunk_timings) EXPECT_EQ(t.recv_begin_ns, 0);
  EXPECT_EQ(dst.k, src.k);
}

TEST_P(TransferTest, WrongTokenIsRejectedWithoutReadingThePayload) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, geom_));
  ASSERT_NO_FATAL_FAILURE(Connect(s, /*recv_buffers=*/4, /*max_inflight=*/1));
  link_.tx_faulty->RewriteHeaderOnChunk(0, [](FrameHeader* h) { h->token[7] ^= 0x5A; });
  OwnedKv src = MakeSyntheticKv(geom_, 5);
  OwnedKv dst = OwnedKv::Zeros(geom_);
  Outcome o = Transfer(s, *codec, src.view(), dst.mutable_view());
  EXPECT_THAT(o.rx, StatusIs(Code::kUnauthenticated, HasSubstr("token")));
  EXPECT_FALSE(o.tx.ok());
  ExpectRejectedPayloadUnread(s);
}

TEST_P(TransferTest, WrongSessionIsRejectedWithoutReadingThePayload) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, geom_));
  ASSERT_NO_FATAL_FAILURE(Connect(s, 4, 1));
  link_.tx_faulty->RewriteHeaderOnChunk(0, [](FrameHeader* h) { h->session_id ^= 1; });
  OwnedKv src = MakeSyntheticKv(geom_, 5);
  OwnedKv dst = OwnedKv::Zeros(geom_);
  Outcome o = Transfer(s, *codec, src.view(), dst.mutable_view());
  EXPECT_THAT(o.rx, StatusIs(Code::kUnauthenticated, HasSubstr("session")));
  EXPECT_FALSE(o.tx.ok());
  ExpectRejectedPayloadUnread(s);
}

TEST_P(TransferTest, LengthBeyondNegotiatedGeometryIsRejectedWithoutReadingThePayload) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, geom_));
  ASSERT_NO_FATAL_FAILURE(Connect(s, 4, 1));
  link_.tx_faulty->RewriteHeaderOnChunk(0, [](FrameHeader* h) {
    h->layer_end = 7;  // beyond L = 4
  });
  OwnedKv src = MakeSyntheticKv(geom_, 5);
  OwnedKv dst = OwnedKv::Zeros(geom_);
  Outcome o = Transfer(s, *codec, src.view(), dst.mutable_view());
  EXPECT_THAT(o.rx, StatusIs(Code::kOutOfRange, HasSubstr("covers layers")));
  EXPECT_FALSE(o.tx.ok());
  ExpectRejectedPayloadUnread(s);
}

TEST_P(TransferTest, OversizedPayloadIsRejectedWithoutReadingIt) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, geom_));
  ASSERT_NO_FATAL_FAILURE(Connect(s, 4, 1));
  link_.tx_faulty->RewriteHeaderOnChunk(0, [](FrameHeader* h) { h->payload_bytes = uint64_t{1} << 36; });
  OwnedKv src = MakeSyntheticKv(geom_, 5);
  OwnedKv dst = OwnedKv::Zeros(geom_);
  Outcome o = Transfer(s, *codec, src.view(), dst.mutable_view());
  EXPECT_THAT(o.rx, StatusIs(Code::kOutOfRange, HasSubstr("payload of")));
  ExpectRejectedPayloadUnread(s);
}

TEST_P(TransferTest, SlowReceiverKeepsSenderMemoryBounded) {
  KVS_ASSERT_OK_AND_ASSIGN(auto codec, registry_.Create("identity"));
  const KvGeometry g{24, 2, 512, 128};  // 24 chunks of 512 KiB
  KVS_ASSERT_OK_AND_ASSIGN(Session first, MakeSession(*codec, g));
  ASSERT_NO_FATAL_FAILURE(Connect(first, /*recv_buffers=*/2, /*max_inflight=*/2));
  OwnedKv src = MakeSyntheticKv(g, 9);
  // Buffered: encode buffers on the sender, receive buffers on the receiver. In place: the
  // sender sends from the KV (no buffers at all) and the receiver's transport holds at most a
  // few placed frames for the consumer.
  for (bool in_place : {false, true}) {
    SCOPED_TRACE(in_place ? "in place" : "buffered");
    KVS_ASSERT_OK_AND_ASSIGN(Session s, MakeSession(*codec, g));
    link_.rx_gate.Register(std::make_shared<Session>(s));
    OwnedKv dst = OwnedKv::Zeros(g);
    SenderOptions so;
    so.encode_buffers = 2;
    so.zero_copy_identity = in_place;
    ReceiverOptions ro;
    ro.zero_copy_identity = in_place;
    const uint64_t received_before = link_.rx->counters().frames_received;
    link_.rx_faulty->HoldReceives();
    Outcome o;
    KvReceiver receiver(link_.rx_faulty.get(), &link_.rx_gate, codec.get(), ro);
    std::thread rx_thread([&] { o.rx = receiver.Receive(s, dst.mutable_view()); });
    // Transports that cannot place payloads without a copy (UCX over shm/self) stay buffered.
    const bool placed = in_place && link_.rx->info().vectored_zero_copy;
    // Frames that arrive before the receiver installed its placer land in receive buffers
    // (correct, one copy more); start sending once it has, so the bound below is exact.
    // Both waits below are bounded (a liveness limit, not a timing assertion): a receiver that
    // failed early would otherwise leave the test spinning until ctest kills it.
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    if (in_place) {
      while (!link_.rx_gate.HasPlacerForTest(s.session_id) && absl::Now() < give_up) std::this_thread::yield();
      EXPECT_TRUE(link_.rx_gate.HasPlacerForTest(s.session_id)) << "the receiver never installed its placer";
    }
    KvSender sender(link_.tx_faulty.get(), &link_.tx_gate, codec.get(), so);
    std::thread tx_thread([&] { o.tx = sender.Send(s, src.view()); });
    // Wait (without sleeping) until the receiving transport holds all it may: from here on the
    // sender can only advance by what the link itself buffers.
    const bool from_kv = in_place && link_.tx->info().vectored_zero_copy;
    const uint64_t cap = placed ? 4 : 2;
    while (link_.rx->counters().frames_received - received_before < cap && absl::Now() < give_up) {
      std::this_thread::yield();
    }
    EXPECT_EQ(link_.rx->counters().frames_received - received_before, cap);
    EXPECT_LE(sender.buffers_in_use(), 2);
    link_.rx_faulty->Open();
    tx_thread.join();
    rx_thread.join();
    ASSERT_THAT(o.tx, IsOk());
    ASSERT_THAT(o.rx, IsOk());
    EXPECT_EQ(dst.k, src.k);
    EXPECT_EQ(dst.v, src.v);
    EXPECT_LE(sender.peak_buffers_in_use(), from_kv ? 0 : 2);  // 2 x 512 KiB, not 24 x
    EXPECT_EQ(sender.buffers_in_use(), 0);
    EXPECT_EQ(link_.rx->counters().recv_buffers_in_use, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(AllTransports, TransferTest, ::testing::ValuesIn(AllTransportCases()),
                         [](const ::testing::TestParamInfo<TransportCase>& i) { return CaseName(i.param); });

}  // namespace
}  // namespace kvs::transfer::testing
