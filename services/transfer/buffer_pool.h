// services/transfer/buffer_pool.h — a fixed set of equal, page-aligned, pre-faulted buffers.
//
// The data plane never allocates per frame: receive buffers (in the transports) and encode
// buffers (in the sender pipeline) come from a BufferPool sized once by configuration. All
// buffers form one contiguous region, so a transport registers it once (UCX ucp_mem_map).
// Pages are touched at creation (first touch costs ~11 us per 4 KiB page on these VMs).
//
//   std::shared_ptr<BufferPool> pool = BufferPool::Create(8 << 20, 4).value();
//   KVS_ASSIGN_OR_RETURN(PooledBuffer b, pool->Acquire(absl::Seconds(1)));
//   b.set_size(n);   // ... fill b.data()[0, n) ...
//   // b returns to the pool when destroyed (or on b.Reset()).
//
// Thread-safe. A PooledBuffer keeps its pool alive, so a buffer may outlive the component that
// lent it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace kvs::transfer {

class BufferPool;

// A buffer lent by a BufferPool; move-only; returns itself when destroyed.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(PooledBuffer&& o) noexcept { *this = std::move(o); }
  PooledBuffer& operator=(PooledBuffer&& o) noexcept;
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  ~PooledBuffer() { Reset(); }

  explicit operator bool() const { return data_ != nullptr; }
  uint8_t* data() const { return data_; }
  size_t capacity() const { return capacity_; }
  size_t size() const { return size_; }
  void set_size(size_t n) { size_ = n; }  // n <= capacity()
  int index() const { return index_; }
  absl::Span<const uint8_t> span() const { return {data_, size_}; }
  absl::Span<uint8_t> mutable_span() const { return {data_, capacity_}; }

  // Returns the buffer to its pool now.
  void Reset();

 private:
  friend class BufferPool;
  std::shared_ptr<BufferPool> pool_;
  uint8_t* data_ = nullptr;
  size_t capacity_ = 0;
  size_t size_ = 0;
  int index_ = -1;
};

class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  // `count` buffers of at least `buffer_bytes` (rounded up to 4 KiB) each.
  static absl::StatusOr<std::shared_ptr<BufferPool>> Create(size_t buffer_bytes, int count);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // Blocks until a buffer is free (DEADLINE_EXCEEDED after `timeout`; CANCELLED once Close()d).
  absl::StatusOr<PooledBuffer> Acquire(absl::Duration timeout = absl::InfiniteDuration());
  // A free buffer, or nullopt.
  std::optional<PooledBuffer> TryAcquire();

  // Wakes every Acquire() with CANCELLED; later Acquire()s fail too. Lent buffers stay valid.
  void Close();

  int in_use() const;
  int count() const { return count_; }
  size_t buffer_bytes() const { return stride_; }
  // The whole region (count * buffer_bytes), for one-time registration.
  absl::Span<uint8_t> region() const { return {base_, total_}; }

  // Runs after each buffer returns, under the pool's lock (lock order: pool before the hook's
  // locks; the hook must not call back into the pool). Pass nullptr to clear.
  void SetReleaseHook(std::function<void()> hook);

  // Keeps `obj` alive until the pool's memory is freed (and destroys it first): used for memory
  // registrations that must end before the region is unmapped.
  void Attach(std::shared_ptr<void> obj);

 private:
  BufferPool(uint8_t* base, size_t total, size_t stride, int count);
  friend class PooledBuffer;
  void Release(int index);
  PooledBuffer Take() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  uint8_t* const base_;
  const size_t total_;
  const size_t stride_;
  const int count_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> free_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> release_hook_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<void>> attached_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvs::transfer
