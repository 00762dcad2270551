#include "common/thread_pool/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace kvs {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 7, 1000, 100003}) {
    std::vector<std::atomic<int>> hits(n);
    ParallelFor(&pool, n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << i;
  }
}

TEST(ThreadPool, NestedCallsRunInlineAndNullPoolRunsInline) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  ParallelFor(&pool, 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      ParallelFor(&pool, 10, [&](int64_t b2, int64_t e2) { sum += e2 - b2; });
    }
  });
  EXPECT_EQ(sum.load(), 80);
  int64_t calls = 0;
  ParallelFor(nullptr, 5, [&](int64_t b, int64_t e) {
    calls++;
    EXPECT_EQ(e - b, 5);
  });
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace kvs
