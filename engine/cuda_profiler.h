// Device time per group of kernels (`bench --profile`): Mark(label) records an event on the
// stream before a group; the time to the next mark is the group's, summed per label over
// steps. Off by default (no events, no synchronisation); while on, the backend runs steps
// without CUDA graphs and Collect synchronises at each step's end.
#ifndef JETSERVE_ENGINE_CUDA_PROFILER_H_
#define JETSERVE_ENGINE_CUDA_PROFILER_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace jetserve {

class CudaStepProfiler {
 public:
  CudaStepProfiler() = default;
  CudaStepProfiler(const CudaStepProfiler&) = delete;
  CudaStepProfiler& operator=(const CudaStepProfiler&) = delete;
  ~CudaStepProfiler();

  bool on() const { return on_; }
  // Switching drops the marks of a step in progress.
  void Enable(bool on);
  // Before a group of kernels enqueued on `stream` (a no-op while off).
  absl::Status Mark(const char* label, cudaStream_t stream);
  // At a step's end: waits for the stream's last mark and adds each group's time to its label.
  absl::Status Collect(cudaStream_t stream);
  // Host time measured by the caller (e.g. "host.metadata"), while on.
  void AddHostMs(const std::string& label, double ms);
  // The summed milliseconds per label and the steps collected since the last call; resets both.
  std::map<std::string, double> Take(int64_t* steps);

 private:
  struct MarkEvent {
    const char* label;
    cudaEvent_t event;
  };
  bool on_ = false;
  std::vector<MarkEvent> marks_;
  std::vector<cudaEvent_t> event_pool_;  // reused step to step
  std::map<std::string, double> ms_;
  int64_t steps_ = 0;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CUDA_PROFILER_H_
