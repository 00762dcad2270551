// common/cuda/cuda_util.h — CUDA runtime errors as absl::Status, and RAII owners of streams,
// events, device memory and pinned host memory (built only with KVS_WITH_CUDA).
//
//   KVS_ASSIGN_OR_RETURN(kvs::CudaStream stream, kvs::CudaStream::Create());
//   KVS_ASSIGN_OR_RETURN(kvs::DeviceBuffer buf, kvs::DeviceBuffer::Allocate(bytes));
//   KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(buf.data(), src, bytes, cudaMemcpyHostToDevice,
//                                            stream.get()));
//
// Owners are move-only; destructors never throw: a failed release is logged as a warning.
// Thread-safety: an owner is a plain value; CUDA's own rules apply to the handle it holds.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvs {

// OK for cudaSuccess; otherwise Internal (FailedPrecondition when there is no usable device,
// ResourceExhausted when memory ran out) with "<what>: <error name>: <error string>".
absl::Status CudaStatus(cudaError_t e, absl::string_view what);

#define KVS_CUDA_RETURN_IF_ERROR(expr)                                       \
  do {                                                                       \
    const cudaError_t kvs_cuda_err_ = (expr);                                \
    if (kvs_cuda_err_ != cudaSuccess) return ::kvs::CudaStatus(kvs_cuda_err_, #expr); \
  } while (false)

// Number of CUDA devices; FailedPrecondition when the driver or a device is missing.
absl::StatusOr<int> CudaDeviceCount();

// Whether kernels can read p where it points: device or managed memory (a dispatcher picks the
// CUDA codecs for KV that lives there). Plain host memory, pinned included, is not.
absl::StatusOr<bool> IsDeviceMemory(const void* p);

namespace cuda_internal {
struct StreamDeleter {
  void operator()(CUstream_st* s) const;
};
struct EventDeleter {
  void operator()(CUevent_st* e) const;
};
struct DeviceDeleter {
  void operator()(void* p) const;
};
struct PinnedDeleter {
  void operator()(void* p) const;
};
}  // namespace cuda_internal

// A stream created with cudaStreamNonBlocking (no implicit sync with the legacy default stream).
class CudaStream {
 public:
  static absl::StatusOr<CudaStream> Create();
  cudaStream_t get() const { return s_.get(); }
  absl::Status Synchronize() const;

 private:
  std::unique_ptr<CUstream_st, cuda_internal::StreamDeleter> s_;
};

// An event; timing events record elapsed time (the default), sync-only ones do not.
class CudaEvent {
 public:
  static absl::StatusOr<CudaEvent> Create(bool timing = true);
  cudaEvent_t get() const { return e_.get(); }
  absl::Status Record(cudaStream_t stream) const;
  absl::Status Synchronize() const;
  // Milliseconds from `start` to this event (both recorded and complete).
  absl::StatusOr<float> MillisecondsSince(const CudaEvent& start) const;

 private:
  std::unique_ptr<CUevent_st, cuda_internal::EventDeleter> e_;
};

// cudaMalloc'd device memory (256-byte aligned).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  uint8_t* data() const { return static_cast<uint8_t*>(p_.get()); }
  size_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(p_.get());
  }

 private:
  std::unique_ptr<void, cuda_internal::DeviceDeleter> p_;
  size_t size_ = 0;
};

// cudaMallocHost'd (page-locked) host memory, for asynchronous copies.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  static absl::StatusOr<PinnedBuffer> Allocate(size_t bytes);
  uint8_t* data() const { return static_cast<uint8_t*>(p_.get()); }
  size_t size() const { return size_; }

 private:
  std::unique_ptr<void, cuda_internal::PinnedDeleter> p_;
  size_t size_ = 0;
};

}  // namespace kvs
