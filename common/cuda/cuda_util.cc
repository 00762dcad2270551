#include "common/cuda/cuda_util.h"

#include "absl/strings/str_cat.h"
#include "common/log/log.h"

namespace kvs {

absl::Status CudaStatus(cudaError_t e, absl::string_view what) {
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat(what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
  switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
      return absl::FailedPreconditionError(msg);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<int> CudaDeviceCount() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the recorded error so later calls start clean
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
  }
  return n;
}

absl::StatusOr<bool> IsDeviceMemory(const void* p) {
  cudaPointerAttributes a{};
  KVS_CUDA_RETURN_IF_ERROR(cudaPointerGetAttributes(&a, p));
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

namespace cuda_internal {

void StreamDeleter::operator()(CUstream_st* s) const {
  if (cudaError_t e = cudaStreamDestroy(s); e != cudaSuccess) {
    KVS_LOG_WARN("cudaStreamDestroy failed: {}", cudaGetErrorString(e));
  }
}
void EventDeleter::operator()(CUevent_st* ev) const {
  if (cudaError_t e = cudaEventDestroy(ev); e != cudaSuccess) {
    KVS_LOG_WARN("cudaEventDestroy failed: {}", cudaGetErrorString(e));
  }
}
void DeviceDeleter::operator()(void* p) const {
  if (cudaError_t e = cudaFree(p); e != cudaSuccess) {
    KVS_LOG_WARN("cudaFree failed: {}", cudaGetErrorString(e));
  }
}
void PinnedDeleter::operator()(void* p) const {
  if (cudaError_t e = cudaFreeHost(p); e != cudaSuccess) {
    KVS_LOG_WARN("cudaFreeHost failed: {}", cudaGetErrorString(e));
  }
}

}  // namespace cuda_internal

absl::StatusOr<CudaStream> CudaStream::Create() {
  cudaStream_t s = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CudaStream out;
  out.s_.reset(s);
  return out;
}

absl::Status CudaStream::Synchronize() const {
  return CudaStatus(cudaStreamSynchronize(get()), "cudaStreamSynchronize");
}

absl::StatusOr<CudaEvent> CudaEvent::Create(bool timing) {
  cudaEvent_t e = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(
      cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  CudaEvent out;
  out.e_.reset(e);
  return out;
}

absl::Status CudaEvent::Record(cudaStream_t stream) const {
  return CudaStatus(cudaEventRecord(get(), stream), "cudaEventRecord");
}

absl::Status CudaEvent::Synchronize() const {
  return CudaStatus(cudaEventSynchronize(get()), "cudaEventSynchronize");
}

absl::StatusOr<float> CudaEvent::MillisecondsSince(const CudaEvent& start) const {
  float ms = 0;
  KVS_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.get(), get()));
  return ms;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  void* p = nullptr;
  if (bytes > 0) KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes));
  DeviceBuffer out;
  out.p_.reset(p);
  out.size_ = bytes;
  return out;
}

absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes) {
  void* p = nullptr;
  if (bytes > 0) KVS_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, bytes));
  PinnedBuffer out;
  out.p_.reset(p);
  out.size_ = bytes;
  return out;
}

}  // namespace kvs
