// services/transfer/ucx/ucx_handles.h — RAII owners for UCX handles (internal to the UCX
// transport). Each foreign handle gets a named deleter (ggml's include/ggml-cpp.h pattern);
// owners are move-only. Teardown order is encoded by declaration order in the owning classes:
// endpoints -> registered regions -> worker -> context.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kvs::transfer::ucx {

struct UcpConfigDeleter {
  void operator()(ucp_config_t* c) const { ucp_config_release(c); }
};
using UcpConfigPtr = std::unique_ptr<ucp_config_t, UcpConfigDeleter>;

struct UcpContextDeleter {
  void operator()(ucp_context* c) const { ucp_cleanup(c); }
};
using UcpContextPtr = std::unique_ptr<ucp_context, UcpContextDeleter>;

struct UcpWorkerDeleter {
  void operator()(ucp_worker* w) const { ucp_worker_destroy(w); }
};
using UcpWorkerPtr = std::unique_ptr<ucp_worker, UcpWorkerDeleter>;

// A worker's address (released through its worker).
class UcpWorkerAddress {
 public:
  UcpWorkerAddress(ucp_worker_h worker, ucp_address_t* addr, size_t len)
      : worker_(worker), addr_(addr), len_(len) {}
  UcpWorkerAddress(const UcpWorkerAddress&) = delete;
  UcpWorkerAddress& operator=(const UcpWorkerAddress&) = delete;
  ~UcpWorkerAddress() {
    if (addr_ != nullptr) ucp_worker_release_address(worker_, addr_);
  }
  const ucp_address_t* get() const { return addr_; }
  size_t size() const { return len_; }
  std::string bytes() const { return std::string(reinterpret_cast<const char*>(addr_), len_); }

 private:
  ucp_worker_h worker_;
  ucp_address_t* addr_;
  size_t len_;
};

// Memory registered with a context (ucp_mem_map); deregistered on destruction. Holds the
// context's owner alive through `keepalive`.
class UcxRegisteredRegion {
 public:
  UcxRegisteredRegion(std::shared_ptr<void> keepalive, ucp_context_h ctx, ucp_mem_h memh,
                      void* base, size_t length)
      : keepalive_(std::move(keepalive)), ctx_(ctx), memh_(memh), base_(base), length_(length) {}
  UcxRegisteredRegion(const UcxRegisteredRegion&) = delete;
  UcxRegisteredRegion& operator=(const UcxRegisteredRegion&) = delete;
  ~UcxRegisteredRegion() {
    if (memh_ != nullptr) ucp_mem_unmap(ctx_, memh_);
  }
  ucp_mem_h memh() const { return memh_; }
  bool Contains(const void* p, size_t n) const {
    const auto* b = static_cast<const uint8_t*>(base_);
    const auto* q = static_cast<const uint8_t*>(p);
    return q >= b && q + n <= b + length_;
  }

 private:
  std::shared_ptr<void> keepalive_;  // first member: released last
  ucp_context_h ctx_;
  ucp_mem_h memh_;
  void* base_;
  size_t length_;
};

inline absl::Status UcsError(absl::string_view what, ucs_status_t s) {
  return absl::UnavailableError(absl::StrCat("ucx: ", what, ": ", ucs_status_string(s)));
}

}  // namespace kvs::transfer::ucx
