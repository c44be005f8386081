#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace jetserve::kernels::cuda {

absl::Status CudaAvailable() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: cudaGetDeviceCount returned ", cudaGetErrorName(e), " (",
                     cudaGetErrorString(e), ")"));
  }
  if (count == 0) {
    return absl::FailedPreconditionError("no CUDA device: cudaGetDeviceCount found 0 devices");
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceInfo> OpenDevice(int index) {
  if (absl::Status s = CudaAvailable(); !s.ok()) return s;
  CUDA_RETURN_IF_ERROR(cudaSetDevice(index));
  cudaDeviceProp p{};
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&p, index));
  DeviceInfo info;
  info.index = index;
  info.name = p.name;
  info.sm_count = p.multiProcessorCount;
  info.major = p.major;
  info.minor = p.minor;
  info.total_bytes = static_cast<int64_t>(p.totalGlobalMem);
  info.shared_per_block = static_cast<int64_t>(p.sharedMemPerBlockOptin);
  size_t free_b = 0, total_b = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_b, &total_b));
  info.free_bytes = static_cast<int64_t>(free_b);
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, index) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, index) == cudaSuccess) {
    // Double data rate: two transfers per clock.
    info.peak_bandwidth_gbs = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  }
  cudaGetLastError();
  return info;
}

absl::StatusOr<double> MeasureCopyBandwidth(int64_t bytes, int reps) {
  if (absl::Status s = CudaAvailable(); !s.ok()) return s;
  // Everything created is released on every path; every call is checked (a device in a bad
  // state must give a Status, not an uninitialised event handle).
  struct Probe {
    void* a = nullptr;
    void* b = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Probe() {
      if (start != nullptr) cudaEventDestroy(start);
      if (stop != nullptr) cudaEventDestroy(stop);
      if (a != nullptr) cudaFree(a);
      if (b != nullptr) cudaFree(b);
    }
  } p;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&p.a, bytes));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&p.b, bytes));
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&p.start));
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&p.stop));
  CUDA_RETURN_IF_ERROR(cudaMemset(p.a, 1, bytes));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(p.b, p.a, bytes, cudaMemcpyDeviceToDevice, 0));  // warm-up
  CUDA_RETURN_IF_ERROR(cudaEventRecord(p.start, 0));
  for (int i = 0; i < reps; ++i) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(p.b, p.a, bytes, cudaMemcpyDeviceToDevice, 0));
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(p.stop, 0));
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(p.stop));
  float ms = 0;
  CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, p.start, p.stop));
  if (ms <= 0) return absl::InternalError("copy bandwidth probe measured no time");
  return 2.0 * static_cast<double>(bytes) * reps / (ms * 1e-3) / 1e9;
}

}  // namespace jetserve::kernels::cuda
