// Whether a CUDA device can be used here, and what it is. Safe to call on a machine without a
// GPU or driver: the answer is then an error status, never a crash.
#ifndef JETSERVE_KERNELS_CUDA_DEVICE_H_
#define JETSERVE_KERNELS_CUDA_DEVICE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace jetserve::kernels::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_count = 0;
  int major = 0, minor = 0;       // compute capability
  int64_t total_bytes = 0;        // global memory
  int64_t free_bytes = 0;         // free at the time of the probe
  int64_t shared_per_block = 0;   // opt-in maximum of dynamic shared memory per block
  double peak_bandwidth_gbs = 0;  // from the memory clock and bus width (theoretical)
};

// Ok when at least one device is visible and usable; otherwise FailedPrecondition starting with
// "no CUDA device: " and the runtime's answer (e.g. "cudaGetDeviceCount returned
// cudaErrorNoDevice").
absl::Status CudaAvailable();

// Selects device `index` for the calling thread and describes it.
absl::StatusOr<DeviceInfo> OpenDevice(int index = 0);

// Measures device-to-device copy bandwidth (GB/s, bytes read + written per second) with a
// `bytes`-sized cudaMemcpyAsync repeated `reps` times: the practical bound decode is held to.
absl::StatusOr<double> MeasureCopyBandwidth(int64_t bytes = int64_t{1} << 30, int reps = 10);

}  // namespace jetserve::kernels::cuda

#endif  // JETSERVE_KERNELS_CUDA_DEVICE_H_
