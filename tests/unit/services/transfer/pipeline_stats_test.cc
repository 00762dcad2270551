// The stats arithmetic and the analytic model of CODECS.md §5 (no transport involved).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "services/transfer/pipeline.h"
#include "tests/testing/status_matchers.h"

namespace kvs::transfer {
namespace {

constexpr int64_t kMs = 1000000;

TransferStats ThreeChunks() {
  TransferStats st;
  for (uint32_t i = 0; i < 3; ++i) {
    ChunkTiming t;
    t.chunk = i;
    t.raw_bytes = 1000000;
    t.wire_bytes = 500000;  // 4 ms at 1 Gbit/s
    const int64_t base = 10 * kMs * i;
    t.encode_begin_ns = base;
    t.encode_end_ns = base + 2 * kMs;       // c = 2 ms
    t.wire_begin_ns = base + 3 * kMs;       // 1 ms queued
    t.wire_end_ns = base + 6 * kMs;
    t.recv_begin_ns = base + 4 * kMs;
    t.recv_end_ns = base + 7 * kMs;         // wire interval [3, 7]
    t.decode_begin_ns = base + 7 * kMs;
    t.decode_end_ns = base + 8 * kMs;       // d = 1 ms
    st.chunk_timings.push_back(t);
  }
  return st;
}

TEST(TransferStats, SummarizeSumsStagesAndUnionsWire) {
  TransferStats st = ThreeChunks();
  SummarizeTimings(0, 28 * kMs, &st);
  EXPECT_EQ(st.chunks, 3);
  EXPECT_EQ(st.bytes_raw, 3000000u);
  EXPECT_EQ(st.bytes_wire, 1500000u);
  EXPECT_DOUBLE_EQ(st.ratio, 2.0);
  EXPECT_DOUBLE_EQ(st.encode_ms, 6.0);
  EXPECT_DOUBLE_EQ(st.decode_ms, 3.0);
  EXPECT_DOUBLE_EQ(st.queue_ms, 3.0);
  EXPECT_DOUBLE_EQ(st.wire_ms, 12.0);  // three disjoint 4 ms intervals
  EXPECT_DOUBLE_EQ(st.handoff_ms, 28.0);
  EXPECT_NEAR(st.goodput_gbps, 8.0 * 3e6 / 28e6, 1e-12);
}

TEST(TransferStats, OverlappingWireIntervalsCountOnce) {
  TransferStats st = ThreeChunks();
  for (auto& t : st.chunk_timings) {  // all three on the wire during [3, 7] ms
    const int64_t shift = t.encode_begin_ns;
    t.wire_begin_ns -= shift;
    t.recv_end_ns -= shift;
  }
  SummarizeTimings(0, 10 * kMs, &st);
  EXPECT_DOUBLE_EQ(st.wire_ms, 4.0);
}

TEST(TransferStats, AnalyticFormulasOfCodecsSection5) {
  TransferStats st = ThreeChunks();
  SummarizeTimings(0, 28 * kMs, &st);
  PredictHandoff(1.0, &st);  // x_i = 8 * 500000 / 1e6 = 4 ms
  EXPECT_DOUBLE_EQ(st.analytic.transfer_ms, 12.0);
  EXPECT_DOUBLE_EQ(st.analytic.raw_ms, 24.0);
  EXPECT_DOUBLE_EQ(st.analytic.sequential_ms, 6.0 + 12.0 + 3.0);
  // (c0 + x0 + d0) + (n-1) * max(mean c, mean x, mean d) = 7 + 2 * 4
  EXPECT_DOUBLE_EQ(st.analytic.pipelined_ms, 15.0);
  PredictHandoff(0, &st);
  EXPECT_EQ(st.analytic.pipelined_ms, 0);
}

// ThreeChunks() on one clock: header arrival 1 ms after the send began, kDone (sent at the last
// decode end, 28 ms) arriving 0.5 ms later on the sender's clock.
std::vector<ChunkTiming> ShiftReceiver(std::vector<ChunkTiming> t, int64_t offset) {
  for (ChunkTiming& c : t) {
    c.recv_begin_ns += offset;
    c.recv_end_ns += offset;
    c.decode_begin_ns += offset;
    c.decode_end_ns += offset;
  }
  return t;
}

TEST(PeerClockOffset, IsZeroWhenTheStampsShareAClock) {
  const std::vector<ChunkTiming> t = ThreeChunks().chunk_timings;
  EXPECT_EQ(EstimatePeerClockOffsetNs(t, 28 * kMs + kMs / 2), 0);
}

TEST(PeerClockOffset, RecoversAnUnrelatedClockWithinTheLatency) {
  const int64_t done_arrival = 28 * kMs + kMs / 2;
  // Causal bounds: offset - 0.5 ms <= estimate <= offset + 1 ms, midpoint = offset + 0.25 ms.
  for (int64_t offset : {int64_t{3600} * 1000 * kMs, -int64_t{86400} * 1000 * kMs, 7 * kMs}) {
    SCOPED_TRACE(offset);
    const int64_t est = EstimatePeerClockOffsetNs(ShiftReceiver(ThreeChunks().chunk_timings, offset), done_arrival);
    EXPECT_EQ(est, offset + kMs / 4);
  }
}

TEST(PeerClockOffset, MissingStampsGiveAOneSidedOrNoEstimate) {
  // Only the upper bound (no kDone arrival): 0 where 0 is within it, else the bound itself.
  EXPECT_EQ(EstimatePeerClockOffsetNs(ShiftReceiver(ThreeChunks().chunk_timings, 100 * kMs), 0), 0);
  std::vector<ChunkTiming> t = ShiftReceiver(ThreeChunks().chunk_timings, -100 * kMs);
  EXPECT_EQ(EstimatePeerClockOffsetNs(t, 0), -100 * kMs + kMs);
  for (ChunkTiming& c : t) c.wire_begin_ns = 0;
  EXPECT_EQ(EstimatePeerClockOffsetNs(t, 0), 0);
  EXPECT_EQ(EstimatePeerClockOffsetNs({}, 28 * kMs), 0);
}

TEST(LayerProgress, WaitsForLayersAndReportsProducerFailure) {
  LayerProgress p;
  EXPECT_TRUE(absl::IsDeadlineExceeded(p.WaitFor(1, absl::ZeroDuration())));
  std::thread producer([&] {
    p.MarkReady(2);
    p.MarkReady(1);  // ignored: monotonic
  });
  KVS_EXPECT_OK(p.WaitFor(2, absl::InfiniteDuration()));
  producer.join();
  p.Fail(absl::InternalError("prefill oom"));
  EXPECT_THAT(p.WaitFor(3, absl::InfiniteDuration()),
              ::kvs::testing::StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("oom")));
}

}  // namespace
}  // namespace kvs::transfer
