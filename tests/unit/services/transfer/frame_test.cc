#include "services/transfer/frame.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "services/transfer/crc32c.h"
#include "tests/testing/status_matchers.h"

namespace kvs::transfer {
namespace {

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;
using Code = absl::StatusCode;

class FrameTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = CodecRegistry::Builtin();
    KVS_ASSERT_OK_AND_ASSIGN(codec_, registry_.Create("identity"));
    SessionParams p;
    p.session_id = 0x1122334455667788ull;
    p.token = RandomSessionToken();
    p.request_id = 42;
    p.geom = {4, 2, 16, 8};
    KVS_ASSERT_OK_AND_ASSIGN(session_, NegotiateSession(p, *codec_));
  }

  FrameHeader Sealed(uint32_t chunk) const {
    const uint64_t n = session_.chunks[chunk].max_payload_bytes;
    FrameHeader h = MakeChunkHeader(session_, chunk, n, 0x1234u);
    SealFrameHeader(&h);
    return h;
  }

  CodecRegistry registry_;
  std::unique_ptr<Codec> codec_;
  Session session_;
};

TEST_F(FrameTest, HeaderLayoutIsPinned) {
  FrameHeader h = Sealed(2);
  uint8_t b[128];
  std::memcpy(b, &h, sizeof b);
  EXPECT_EQ(std::memcmp(b, "KVSF", 4), 0);                // magic
  EXPECT_EQ(b[4], kFrameVersion);                          // version
  EXPECT_EQ(b[5], static_cast<uint8_t>(FrameKind::kChunk));
  EXPECT_EQ(b[6], static_cast<uint8_t>(CodecId::kIdentity));
  EXPECT_EQ(b[8], 0x88);                                   // session id, little-endian
  EXPECT_EQ(b[15], 0x11);
  EXPECT_EQ(std::memcmp(b + 16, session_.token.data(), 16), 0);
  EXPECT_EQ(b[32], 42);                                    // request id
  EXPECT_EQ(b[40], 2);                                     // chunk index
  EXPECT_EQ(b[44], 4);                                     // chunk count
  EXPECT_EQ(b[48], 2);                                     // layer begin
  EXPECT_EQ(b[52], 3);                                     // layer end
  EXPECT_EQ(b[60], 16);                                    // token end
  uint32_t crc;
  std::memcpy(&crc, b + 124, 4);
  EXPECT_EQ(crc, Crc32c(b, 124));
}

TEST_F(FrameTest, NegotiatedPlanIsOneLayerPerChunk) {
  ASSERT_EQ(session_.chunks.size(), 4u);
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(session_.chunks[i].layer_begin, i);
    EXPECT_EQ(session_.chunks[i].layer_end, i + 1);
    EXPECT_EQ(session_.chunks[i].raw_bytes, 4u * 2 * 16 * 8);
    EXPECT_EQ(session_.chunks[i].max_payload_bytes, 32u + 4 * 2 * 16 * 8);
    EXPECT_TRUE(session_.chunks[i].exact_payload);
  }
}

TEST_F(FrameTest, NegotiateSessionSlabsAndRejectsBadPlans) {
  SessionParams p;
  p.geom = {5, 2, 16, 8};
  p.layers_per_chunk = 2;
  KVS_ASSERT_OK_AND_ASSIGN(Session s, NegotiateSession(p, *codec_));
  ASSERT_EQ(s.chunks.size(), 3u);
  EXPECT_EQ(s.chunks[2].layer_begin, 4u);
  EXPECT_EQ(s.chunks[2].layer_end, 5u);
  p.layers_per_chunk = 0;
  EXPECT_THAT(NegotiateSession(p, *codec_), StatusIs(Code::kInvalidArgument, HasSubstr("layers_per_chunk")));
  p.layers_per_chunk = 1;
  p.tokens_per_chunk = 4;
  EXPECT_THAT(NegotiateSession(p, *codec_), StatusIs(Code::kUnimplemented, HasSubstr("token")));
  p.tokens_per_chunk = 0;
  p.geom = {0, 2, 16, 8};
  EXPECT_THAT(NegotiateSession(p, *codec_), StatusIs(Code::kInvalidArgument, HasSubstr("geometry")));
}

TEST_F(FrameTest, ValidHeaderPasses) {
  for (uint32_t i = 0; i < 4; ++i) {
    FrameHeader h = Sealed(i);
    EXPECT_THAT(CheckFrameHeader(h), IsOk());
    EXPECT_THAT(ValidateFrameHeader(h, session_), IsOk());
  }
}

TEST_F(FrameTest, EveryHeaderBitFlipIsCaught) {
  const FrameHeader good = Sealed(1);
  for (size_t bit = 0; bit < 128 * 8; ++bit) {
    FrameHeader h = good;
    reinterpret_cast<uint8_t*>(&h)[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    EXPECT_FALSE(CheckFrameHeader(h).ok()) << "bit " << bit;
  }
}

TEST_F(FrameTest, StructuralChecks) {
  FrameHeader h = Sealed(0);
  h.magic = 0;
  SealFrameHeader(&h);
  EXPECT_THAT(CheckFrameHeader(h), StatusIs(Code::kInvalidArgument, HasSubstr("magic")));
  h = Sealed(0);
  h.version = kFrameVersion + 1;
  SealFrameHeader(&h);
  EXPECT_THAT(CheckFrameHeader(h), StatusIs(Code::kFailedPrecondition, HasSubstr("version")));
  h = Sealed(0);
  h.kind = 9;
  SealFrameHeader(&h);
  EXPECT_THAT(CheckFrameHeader(h), StatusIs(Code::kInvalidArgument, HasSubstr("kind")));
  h = Sealed(0);
  h.reserved[3] = 1;
  SealFrameHeader(&h);
  EXPECT_THAT(CheckFrameHeader(h), StatusIs(Code::kInvalidArgument, HasSubstr("reserved")));
  h = Sealed(0);
  h.chunk_index ^= 1;  // not re-sealed
  EXPECT_THAT(CheckFrameHeader(h), StatusIs(Code::kDataLoss, HasSubstr("header crc")));
}

TEST_F(FrameTest, WrongTokenOrSessionIsUnauthenticated) {
  FrameHeader h = Sealed(0);
  h.token[15] ^= 0x80;
  EXPECT_THAT(ValidateFrameHeader(h, session_), StatusIs(Code::kUnauthenticated, HasSubstr("token")));
  h = Sealed(0);
  h.session_id += 1;
  EXPECT_THAT(ValidateFrameHeader(h, session_), StatusIs(Code::kUnauthenticated, HasSubstr("session")));
}

TEST_F(FrameTest, FieldsOutsideTheNegotiatedGeometryAreOutOfRange) {
  struct Case {
    const char* what;
    void (*mutate)(FrameHeader*);
  };
  const Case cases[] = {
      {"chunk index", [](FrameHeader* h) { h->chunk_index = 4; }},
      {"chunk count", [](FrameHeader* h) { h->chunk_count = 5; }},
      {"covers layers", [](FrameHeader* h) { h->layer_end = 3; }},
      {"covers layers", [](FrameHeader* h) { h->token_end = 17; }},
      {"raw bytes", [](FrameHeader* h) { h->raw_bytes += 2; }},
      {"payload of", [](FrameHeader* h) { h->payload_bytes = 1ull << 40; }},
      {"payload of", [](FrameHeader* h) { h->payload_bytes -= 1; }},  // identity is exact-size
  };
  for (const Case& c : cases) {
    FrameHeader h = Sealed(1);
    c.mutate(&h);
    SealFrameHeader(&h);
    EXPECT_THAT(CheckFrameHeader(h), IsOk());
    EXPECT_THAT(ValidateFrameHeader(h, session_), StatusIs(Code::kOutOfRange, HasSubstr(c.what)))
        << c.what;
  }
}

TEST_F(FrameTest, CodecDtypeAndRequestMustMatch) {
  FrameHeader h = Sealed(0);
  h.codec = static_cast<uint8_t>(CodecId::kUniformInt8);
  EXPECT_THAT(ValidateFrameHeader(h, session_), StatusIs(Code::kInvalidArgument, HasSubstr("codec")));
  h = Sealed(0);
  h.codec_params_digest ^= 1;
  EXPECT_THAT(ValidateFrameHeader(h, session_), StatusIs(Code::kInvalidArgument, HasSubstr("digest")));
  h = Sealed(0);
  h.dtype = static_cast<uint8_t>(DType::kBF16);
  EXPECT_THAT(ValidateFrameHeader(h, session_), StatusIs(Code::kInvalidArgument, HasSubstr("dtype")));
  h = Sealed(0);
  h.request_id = 7;
  EXPECT_THAT(ValidateFrameHeader(h, session_), StatusIs(Code::kInvalidArgument, HasSubstr("request")));
}

TEST_F(FrameTest, BoundedCodecAcceptsShorterPayloads) {
  KVS_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Codec> zstd, registry_.Create("lossless_zstd"));
  SessionParams p;
  p.geom = {2, 2, 16, 8};
  KVS_ASSERT_OK_AND_ASSIGN(Session s, NegotiateSession(p, *zstd));
  EXPECT_FALSE(s.chunks[0].exact_payload);
  FrameHeader h = MakeChunkHeader(s, 0, 100, 0);
  EXPECT_THAT(ValidateFrameHeader(h, s), IsOk());
  h.payload_bytes = s.chunks[0].max_payload_bytes + 1;
  EXPECT_THAT(ValidateFrameHeader(h, s), StatusIs(Code::kOutOfRange, HasSubstr("at most")));
}

TEST_F(FrameTest, PayloadCrcMismatchIsDataLoss) {
  std::vector<uint8_t> payload(1000, 7);
  FrameHeader h = MakeChunkHeader(session_, 0, payload.size(), Crc32c(payload.data(), payload.size()));
  EXPECT_THAT(VerifyPayloadCrc(h, payload), IsOk());
  payload[500] ^= 0x10;
  EXPECT_THAT(VerifyPayloadCrc(h, payload), StatusIs(Code::kDataLoss, HasSubstr("crc32c mismatch")));
  payload.pop_back();
  EXPECT_THAT(VerifyPayloadCrc(h, payload), StatusIs(Code::kDataLoss, HasSubstr("header says")));
}

TEST_F(FrameTest, ControlFramesValidate) {
  std::vector<RxChunkTiming> t(4);
  for (uint32_t i = 0; i < 4; ++i) t[i] = {i, 0, 10 * i, 10 * i + 1, 10 * i + 2, 10 * i + 3};
  std::vector<uint8_t> done = EncodeDonePayload(t);
  FrameHeader h = MakeControlHeader(session_, FrameKind::kDone, done);
  SealFrameHeader(&h);
  EXPECT_THAT(CheckFrameHeader(h), IsOk());
  EXPECT_THAT(ValidateFrameHeader(h, session_), IsOk());
  EXPECT_THAT(VerifyPayloadCrc(h, done), IsOk());
  KVS_ASSERT_OK_AND_ASSIGN(std::vector<RxChunkTiming> back, DecodeDonePayload(done, 4));
  EXPECT_EQ(back[3].decode_end_ns, 33);
  EXPECT_THAT(DecodeDonePayload(done, 3), StatusIs(Code::kDataLoss, HasSubstr("size")));
  h.payload_bytes += 40;
  EXPECT_THAT(ValidateFrameHeader(h, session_), StatusIs(Code::kOutOfRange, HasSubstr("done payload")));

  std::vector<uint8_t> abort = EncodeAbortPayload(absl::DataLossError("chunk 3 crc"));
  FrameHeader a = MakeControlHeader(session_, FrameKind::kAbort, abort);
  EXPECT_THAT(ValidateFrameHeader(a, session_), IsOk());
  EXPECT_THAT(DecodeAbortPayload(abort), StatusIs(Code::kDataLoss, HasSubstr("chunk 3 crc")));
  a.payload_bytes = 1 << 20;
  EXPECT_THAT(ValidateFrameHeader(a, session_), StatusIs(Code::kOutOfRange, HasSubstr("abort")));
}

TEST_F(FrameTest, GateChecksRegisteredSessions) {
  FrameGate gate;
  const FrameHeader h = Sealed(0);
  EXPECT_THAT(gate.Check(h), StatusIs(Code::kUnauthenticated, HasSubstr("not open")));
  gate.Register(std::make_shared<Session>(session_));
  EXPECT_THAT(gate.Check(h), IsOk());
  FrameHeader bad = h;
  bad.token[0] ^= 1;
  SealFrameHeader(&bad);
  EXPECT_THAT(gate.Check(bad), StatusIs(Code::kUnauthenticated, ::testing::_));
  gate.Unregister(session_.session_id);
  EXPECT_THAT(gate.Check(h), StatusIs(Code::kUnauthenticated, ::testing::_));
}

TEST(SessionToken, RandomTokensDiffer) {
  EXPECT_NE(RandomSessionToken(), RandomSessionToken());
  EXPECT_NE(RandomId(), 0u);
}

TEST(CodecParamsDigest, DependsOnOptionsThatChangeBytes) {
  CodecRegistry r = CodecRegistry::Builtin();
  KVS_ASSERT_OK_AND_ASSIGN(auto a, r.Create("identity"));
  KVS_ASSERT_OK_AND_ASSIGN(auto b, r.Create("lossless_zstd"));
  EXPECT_NE(CodecParamsDigest(*a), CodecParamsDigest(*b));
  EXPECT_EQ(CodecParamsDigest(*a), CodecParamsDigest(*a));
}

}  // namespace
}  // namespace kvs::transfer
