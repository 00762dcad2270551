#include "services/transfer/buffer_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kvs::transfer {

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    pool_ = std::move(o.pool_);
    data_ = o.data_;
    capacity_ = o.capacity_;
    size_ = o.size_;
    index_ = o.index_;
    o.data_ = nullptr;
    o.capacity_ = o.size_ = 0;
    o.index_ = -1;
  }
  return *this;
}

void PooledBuffer::Reset() {
  if (data_ == nullptr) return;
  std::shared_ptr<BufferPool> pool = std::move(pool_);
  const int index = index_;
  data_ = nullptr;
  capacity_ = size_ = 0;
  index_ = -1;
  pool->Release(index);
}

absl::StatusOr<std::shared_ptr<BufferPool>> BufferPool::Create(size_t buffer_bytes, int count) {
  if (count < 1 || buffer_bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("buffer pool: ", count, " buffers of ", buffer_bytes, " bytes"));
  }
  const size_t stride = (buffer_bytes + 4095) & ~size_t{4095};
  const size_t total = stride * static_cast<size_t>(count);
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("buffer pool: mmap of ", total, " bytes failed: ", std::strerror(errno)));
  }
  if (total >= (2u << 20)) madvise(p, total, MADV_HUGEPAGE);  // fewer faults and TLB misses
  std::memset(p, 0, total);  // pre-fault: keep first-touch cost out of transfers
  return std::shared_ptr<BufferPool>(new BufferPool(static_cast<uint8_t*>(p), total, stride, count));
}

BufferPool::BufferPool(uint8_t* base, size_t total, size_t stride, int count)
    : base_(base), total_(total), stride_(stride), count_(count) {
  free_.reserve(count);
  for (int i = count - 1; i >= 0; --i) free_.push_back(i);
}

BufferPool::~BufferPool() {
  attached_.clear();  // registrations end before the memory goes
  munmap(base_, total_);
}

PooledBuffer BufferPool::Take() {
  const int i = free_.back();
  free_.pop_back();
  PooledBuffer b;
  b.pool_ = shared_from_this();
  b.data_ = base_ + static_cast<size_t>(i) * stride_;
  b.capacity_ = stride_;
  b.size_ = 0;
  b.index_ = i;
  return b;
}

absl::StatusOr<PooledBuffer> BufferPool::Acquire(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time deadline = absl::Now() + timeout;
  while (!closed_ && free_.empty()) {
    if (timeout >= absl::Hours(24 * 365)) {
      cv_.wait(lock);
    } else if (cv_.wait_until(lock, absl::ToChronoTime(deadline)) == std::cv_status::timeout &&
               free_.empty() && !closed_) {
      return absl::DeadlineExceededError("buffer pool: no free buffer");
    }
  }
  if (closed_) return absl::CancelledError("buffer pool closed");
  return Take();
}

std::optional<PooledBuffer> BufferPool::TryAcquire() {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_ || free_.empty()) return std::nullopt;
  return Take();
}

void BufferPool::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

int BufferPool::in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_ - static_cast<int>(free_.size());
}

void BufferPool::SetReleaseHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  release_hook_ = std::move(hook);
}

void BufferPool::Attach(std::shared_ptr<void> obj) {
  std::lock_guard<std::mutex> lock(mu_);
  attached_.push_back(std::move(obj));
}

void BufferPool::Release(int index) {
  std::lock_guard<std::mutex> lock(mu_);
  free_.push_back(index);
  cv_.notify_one();
  if (release_hook_) release_hook_();
}

}  // namespace kvs::transfer
