// Device memory owned for an object's lifetime: blocks allocated one at a time, all freed when
// the owner goes (the weights, the state and KV pools). The owner's user must have finished
// with them (its stream synchronised) first.
#ifndef JETSERVE_KERNELS_CUDA_DEVICE_ALLOCATIONS_H_
#define JETSERVE_KERNELS_CUDA_DEVICE_ALLOCATIONS_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_check.h"

namespace jetserve::kernels::cuda {

class DeviceAllocations {
 public:
  DeviceAllocations() = default;
  ~DeviceAllocations() {
    for (void* p : blocks_) cudaFree(p);
  }
  DeviceAllocations(const DeviceAllocations&) = delete;
  DeviceAllocations& operator=(const DeviceAllocations&) = delete;

  // `count` elements of T, uninitialised (a zero count still gets a valid, 1-byte block).
  template <typename T>
  absl::StatusOr<T*> Alloc(int64_t count) {
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(1, static_cast<size_t>(count) * sizeof(T));
    CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes));
    blocks_.push_back(p);
    return static_cast<T*>(p);
  }

 private:
  std::vector<void*> blocks_;
};

}  // namespace jetserve::kernels::cuda

#endif  // JETSERVE_KERNELS_CUDA_DEVICE_ALLOCATIONS_H_
