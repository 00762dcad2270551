// services/transfer/internal/rx_queue.h — the receive side shared by the transports (internal).
//
// A fixed-capacity ring of received frames plus the connection's failure status. Transport
// threads Push() frames and Fail() the connection; Connection::Receive() Pop()s. Frames queued
// before a failure are still returned; then the failure. No allocation after construction.
//
// Frames in receive buffers are bounded by the buffer pool; frames placed straight into their
// destination (no buffer) are bounded here: a transport reserves a placed slot before it reads
// such a payload and the slot returns when the frame is popped (back-pressure for the in-place
// path). Thread-safe.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <functional>
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
  // `buffers`: the pool size; `max_placed`: placed frames queued or being received at once.
  explicit RxQueue(int buffers, int max_placed = 4)
      : ring_(static_cast<size_t>(buffers + max_placed)), max_placed_(max_placed) {}

  // Runs (outside the lock) after a placed frame was popped: a transport that parked a payload
  // for want of a placed slot resumes it.
  void SetPlacedReleaseHook(std::function<void()> hook) {
    std::lock_guard<std::mutex> lock(mu_);
    placed_hook_ = std::move(hook);
  }

  // False when the queue has failed; the frame is dropped then (its buffer returns; a placed
  // frame's reservation is released).
  bool Push(ReceivedFrame f) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok() || count_ == ring_.size()) {
      if (f.is_placed()) --placed_;
      return false;
    }
    ring_[(head_ + count_) % ring_.size()] = std::move(f);
    ++count_;
    cv_.notify_all();
    return true;
  }

  // Blocks until a placed slot is free (true) or the queue failed (false).
  bool ReservePlaced() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return placed_ < max_placed_ || !failure_.ok(); });
    if (!failure_.ok()) return false;
    ++placed_;
    return true;
  }
  bool TryReservePlaced() {
    std::lock_guard<std::mutex> lock(mu_);
    if (placed_ >= max_placed_ || !failure_.ok()) return false;
    ++placed_;
    return true;
  }
  void ReleasePlaced() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --placed_;
      cv_.notify_all();
    }
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
    std::function<void()> hook;
    std::optional<ReceivedFrame> f;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto ready = [&] { return count_ > 0 || !failure_.ok(); };
      if (timeout >= absl::Hours(24 * 365)) {
        cv_.wait(lock, ready);
      } else if (!cv_.wait_for(lock, absl::ToChronoNanoseconds(std::max(timeout, absl::ZeroDuration())),
                               ready)) {
        return absl::DeadlineExceededError("no frame received in time");
      }
      if (count_ == 0) return failure_;
      f = std::move(ring_[head_]);
      ring_[head_].reset();
      head_ = (head_ + 1) % ring_.size();
      --count_;
      if (f->is_placed()) {
        --placed_;
        cv_.notify_all();
        hook = placed_hook_;
      }
    }
    if (hook) hook();
    return std::move(*f);
  }

  // Drops every queued frame (their buffers return to the pool).
  void Clear() {
    std::vector<std::optional<ReceivedFrame>> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& slot : ring_) {
        if (slot) {
          if (slot->is_placed()) --placed_;
          dropped.push_back(std::move(slot));
        }
        slot.reset();
      }
      count_ = 0;
      placed_hook_ = nullptr;
      cv_.notify_all();
    }
    // `dropped` returns the buffers here, outside the lock.
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::optional<ReceivedFrame>> ring_ ABSL_GUARDED_BY(mu_);
  size_t head_ ABSL_GUARDED_BY(mu_) = 0;
  size_t count_ ABSL_GUARDED_BY(mu_) = 0;
  const int max_placed_;
  int placed_ ABSL_GUARDED_BY(mu_) = 0;  // reserved: being received or queued
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::function<void()> placed_hook_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvs::transfer::internal
