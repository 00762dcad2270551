// services/transfer/internal/rx_queue.h — the receive side shared by the transports (internal).
//
// A fixed-capacity ring of received frames plus the connection's failure status. Transport
// threads Push() frames and Fail() the connection; Connection::Receive() Pop()s. Frames queued
// before a failure are still returned; then the failure. No allocation after construction.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/transfer/transport.h"

namespace kvs::transfer::internal {

class RxQueue {
 public:
  explicit RxQueue(int capacity) : ring_(capacity) {}

  // False when the ring is full (cannot happen while every frame holds a pool buffer and the
  // ring has one slot per buffer) or the queue has failed; the frame is dropped then.
  bool Push(ReceivedFrame f) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok() || count_ == ring_.size()) return false;
    ring_[(head_ + count_) % ring_.size()] = std::move(f);
    ++count_;
    cv_.notify_one();
    return true;
  }

  // Records the first failure; returns true if this call set it.
  bool Fail(const absl::Status& s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok()) return false;
    failure_ = s.ok() ? absl::UnknownError("connection failed") : s;
    cv_.notify_all();
    return true;
  }

  absl::Status status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }

  absl::StatusOr<ReceivedFrame> Pop(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [&] { return count_ > 0 || !failure_.ok(); };
    if (timeout >= absl::Hours(24 * 365)) {
      cv_.wait(lock, ready);
    } else if (!cv_.wait_for(lock, absl::ToChronoNanoseconds(std::max(timeout, absl::ZeroDuration())),
                             ready)) {
      return absl::DeadlineExceededError("no frame received in time");
    }
    if (count_ == 0) return failure_;
    ReceivedFrame f = std::move(*ring_[head_]);
    ring_[head_].reset();
    head_ = (head_ + 1) % ring_.size();
    --count_;
    return f;
  }

  // Drops every queued frame (their buffers return to the pool).
  void Clear() {
    std::vector<std::optional<ReceivedFrame>> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& slot : ring_) {
        if (slot) dropped.push_back(std::move(slot));
        slot.reset();
      }
      count_ = 0;
    }
    // `dropped` returns the buffers here, outside the lock.
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::optional<ReceivedFrame>> ring_ ABSL_GUARDED_BY(mu_);
  size_t head_ ABSL_GUARDED_BY(mu_) = 0;
  size_t count_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvs::transfer::internal
