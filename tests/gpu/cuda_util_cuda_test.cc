// common/cuda/cuda_util.h on a GPU: owners, events, and where memory lives.
#include <gtest/gtest.h>

#include <vector>

#include "common/cuda/cuda_util.h"
#include "tests/testing/status_matchers.h"

namespace kvs {
namespace {

TEST(CudaUtil, BuffersStreamsAndEventsWork) {
  KVS_ASSERT_OK_AND_ASSIGN(CudaStream stream, CudaStream::Create());
  KVS_ASSERT_OK_AND_ASSIGN(DeviceBuffer d, DeviceBuffer::Allocate(1 << 20));
  KVS_ASSERT_OK_AND_ASSIGN(PinnedBuffer h, PinnedBuffer::Allocate(1 << 20));
  KVS_ASSERT_OK_AND_ASSIGN(CudaEvent start, CudaEvent::Create());
  KVS_ASSERT_OK_AND_ASSIGN(CudaEvent stop, CudaEvent::Create());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(d.data()) % 256, 0u);
  KVS_ASSERT_OK(start.Record(stream.get()));
  KVS_ASSERT_OK(CudaStatus(cudaMemsetAsync(d.data(), 0x3C, d.size(), stream.get()), "memset"));
  KVS_ASSERT_OK(CudaStatus(
      cudaMemcpyAsync(h.data(), d.data(), h.size(), cudaMemcpyDeviceToHost, stream.get()), "copy"));
  KVS_ASSERT_OK(stop.Record(stream.get()));
  KVS_ASSERT_OK(stop.Synchronize());
  KVS_ASSERT_OK_AND_ASSIGN(float ms, stop.MillisecondsSince(start));
  EXPECT_GE(ms, 0.0f);
  EXPECT_EQ(h.data()[0], 0x3C);
  EXPECT_EQ(h.data()[h.size() - 1], 0x3C);
}

TEST(CudaUtil, TellsDeviceMemoryFromHostMemory) {
  KVS_ASSERT_OK_AND_ASSIGN(DeviceBuffer d, DeviceBuffer::Allocate(4096));
  KVS_ASSERT_OK_AND_ASSIGN(PinnedBuffer h, PinnedBuffer::Allocate(4096));
  std::vector<uint8_t> heap(4096);
  EXPECT_EQ(IsDeviceMemory(d.data()).value_or(false), true);
  EXPECT_EQ(IsDeviceMemory(h.data()).value_or(true), false);
  EXPECT_EQ(IsDeviceMemory(heap.data()).value_or(true), false);
}

TEST(CudaUtil, ReportsAllocationFailureAsResourceExhausted) {
  auto huge = DeviceBuffer::Allocate(size_t{1} << 50);  // 1 PiB
  EXPECT_THAT(huge, testing::StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
  cudaGetLastError();
}

}  // namespace
}  // namespace kvs
