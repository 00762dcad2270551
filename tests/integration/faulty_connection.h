// tests/integration/faulty_connection.h — a Connection decorator that injects faults on the
// sending side (flip a payload bit, rewrite a header) and can hold back the receiving side (a
// slow receiver), over any real transport. Test-only.
#pragma once

#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "services/transfer/crc32c.h"
#include "services/transfer/transport.h"

namespace kvs::transfer::testing {

class FaultyConnection final : public Connection {
 public:
  explicit FaultyConnection(Connection* inner) : inner_(inner) {}

  // Flips bit `bit` of chunk `chunk`'s payload after the sender computed its CRC.
  void FlipPayloadBitOnChunk(uint32_t chunk, size_t bit) {
    std::lock_guard<std::mutex> lock(mu_);
    flip_chunk_ = static_cast<int64_t>(chunk);
    flip_bit_ = bit;
  }
  // Rewrites chunk `chunk`'s header (then re-seals it, so only the rewritten field is wrong).
  void RewriteHeaderOnChunk(uint32_t chunk, std::function<void(FrameHeader*)> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    rewrite_chunk_ = static_cast<int64_t>(chunk);
    rewrite_ = std::move(fn);
  }
  // Rewrites the payload of the kDone frames this side sends (then re-seals its CRCs, so the frame
  // is well-formed and only its content lies).
  void RewriteDonePayload(std::function<void(std::vector<uint8_t>*)> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    rewrite_done_ = std::move(fn);
  }
  // Receive() blocks until Open() (a receiver that does not keep up).
  void HoldReceives() {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = true;
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = false;
    cv_.notify_all();
  }

  absl::Status SendV(const FrameHeader& header, absl::Span<const absl::Span<const uint8_t>> parts,
                     SendCallback done) override {
    FrameHeader h = header;
    bool copy = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (h.kind == static_cast<uint8_t>(FrameKind::kDone) && rewrite_done_) {
        auto owned = std::make_shared<std::vector<uint8_t>>();
        for (absl::Span<const uint8_t> p : parts) owned->insert(owned->end(), p.begin(), p.end());
        rewrite_done_(owned.get());
        h.payload_bytes = owned->size();
        h.payload_crc32c = Crc32c(owned->data(), owned->size());
        SealFrameHeader(&h);
        return inner_->Send(h, *owned, [owned, done = std::move(done)](const SendResult& r) { done(r); });
      }
      if (h.kind == static_cast<uint8_t>(FrameKind::kChunk)) {
        if (static_cast<int64_t>(h.chunk_index) == rewrite_chunk_ && rewrite_) {
          rewrite_(&h);
          SealFrameHeader(&h);
        }
        copy = static_cast<int64_t>(h.chunk_index) == flip_chunk_;
      }
    }
    if (!copy) return inner_->SendV(h, parts, std::move(done));
    auto owned = std::make_shared<std::vector<uint8_t>>();
    for (absl::Span<const uint8_t> p : parts) owned->insert(owned->end(), p.begin(), p.end());
    (*owned)[flip_bit_ / 8] ^= static_cast<uint8_t>(1u << (flip_bit_ % 8));
    return inner_->Send(h, *owned, [owned, done = std::move(done)](const SendResult& r) { done(r); });
  }

  absl::StatusOr<ReceivedFrame> Receive(absl::Duration timeout) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !held_; });
    }
    return inner_->Receive(timeout);
  }

  absl::Status status() const override { return inner_->status(); }
  const TransportInfo& info() const override { return inner_->info(); }
  ConnectionCounters counters() const override { return inner_->counters(); }
  absl::StatusOr<std::unique_ptr<MemoryRegistration>> RegisterSendMemory(
      absl::Span<uint8_t> region) override {
    return inner_->RegisterSendMemory(region);
  }
  void Close() override { inner_->Close(); }

 private:
  Connection* inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t flip_chunk_ = -1;
  size_t flip_bit_ = 0;
  int64_t rewrite_chunk_ = -1;
  std::function<void(FrameHeader*)> rewrite_;
  std::function<void(std::vector<uint8_t>*)> rewrite_done_;
  bool held_ = false;
};

}  // namespace kvs::transfer::testing
