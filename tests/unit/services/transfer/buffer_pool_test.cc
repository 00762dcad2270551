#include "services/transfer/buffer_pool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "tests/testing/status_matchers.h"

namespace kvs::transfer {
namespace {

using ::kvs::testing::StatusIs;

TEST(BufferPool, LendsAlignedBuffersAndTakesThemBack) {
  KVS_ASSERT_OK_AND_ASSIGN(auto pool, BufferPool::Create(5000, 3));
  EXPECT_EQ(pool->buffer_bytes(), 8192u);  // rounded to pages
  EXPECT_EQ(pool->region().size(), 3u * 8192);
  {
    KVS_ASSERT_OK_AND_ASSIGN(PooledBuffer a, pool->Acquire());
    KVS_ASSERT_OK_AND_ASSIGN(PooledBuffer b, pool->Acquire());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 4096, 0u);
    EXPECT_NE(a.data(), b.data());
    EXPECT_EQ(pool->in_use(), 2);
    PooledBuffer moved = std::move(a);
    EXPECT_FALSE(a);
    EXPECT_EQ(pool->in_use(), 2);
  }
  EXPECT_EQ(pool->in_use(), 0);
}

TEST(BufferPool, ExhaustedPoolTimesOutAndCloseCancelsWaiters) {
  KVS_ASSERT_OK_AND_ASSIGN(auto pool, BufferPool::Create(4096, 1));
  KVS_ASSERT_OK_AND_ASSIGN(PooledBuffer held, pool->Acquire());
  EXPECT_FALSE(pool->TryAcquire().has_value());
  EXPECT_THAT(pool->Acquire(absl::Milliseconds(1)), StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  absl::Status waiter_status;
  std::thread waiter([&] { waiter_status = pool->Acquire().status(); });
  pool->Close();
  waiter.join();
  EXPECT_TRUE(absl::IsCancelled(waiter_status));
}

TEST(BufferPool, ReleaseWakesWaiterAndRunsHook) {
  KVS_ASSERT_OK_AND_ASSIGN(auto pool, BufferPool::Create(4096, 1));
  int hook_calls = 0;
  pool->SetReleaseHook([&] { ++hook_calls; });
  KVS_ASSERT_OK_AND_ASSIGN(PooledBuffer held, pool->Acquire());
  std::thread waiter([&] {
    auto b = pool->Acquire();
    EXPECT_TRUE(b.ok());
  });
  held.Reset();
  waiter.join();
  EXPECT_EQ(hook_calls, 2);  // ours, then the waiter's buffer going out of scope
}

TEST(BufferPool, BufferKeepsPoolAlive) {
  PooledBuffer b;
  {
    KVS_ASSERT_OK_AND_ASSIGN(auto pool, BufferPool::Create(4096, 2));
    KVS_ASSERT_OK_AND_ASSIGN(b, pool->Acquire());
  }
  b.data()[0] = 1;  // still mapped
  b.Reset();
}

}  // namespace
}  // namespace kvs::transfer
