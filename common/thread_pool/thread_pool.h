// common/thread_pool/thread_pool.h — a fixed pool of worker threads for data-parallel loops.
//
// The codecs take a ThreadPool* from their caller (never their own), so one pool serves a whole
// daemon and its size is the caller's decision. A null pool means "run on the calling thread".
//
//   kvs::ThreadPool pool(4);
//   kvs::ParallelFor(&pool, n_items, [&](int64_t begin, int64_t end) { ... });
//
// Thread-safe: ParallelFor may be called from several threads at once; each call blocks until all
// its ranges have run. Calls made from inside a worker run inline (no nested parallelism, no
// deadlock).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include <deque>

#include "absl/base/thread_annotations.h"

namespace kvs {

class ThreadPool {
 public:
  // num_threads <= 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()); }

  // Runs fn(begin, end) over [0, n) split into about `size()*4` ranges of at least `min_grain`
  // items, on the workers and the calling thread; returns when every range is done.
  void ParallelFor(int64_t n, int64_t min_grain,
                   const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

// ParallelFor over a possibly-null pool; null runs fn(0, n) inline.
void ParallelFor(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                 int64_t min_grain = 1);

// Number of threads a loop will use on `pool` (1 for null).
inline int PoolThreads(const ThreadPool* pool) { return pool ? pool->size() : 1; }

}  // namespace kvs
