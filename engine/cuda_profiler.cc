#include "engine/cuda_profiler.h"

#include <utility>

#include "engine/status_macros.h"
#include "kernels/cuda/cuda_check.h"

namespace jetserve {

CudaStepProfiler::~CudaStepProfiler() {
  for (cudaEvent_t e : event_pool_) cudaEventDestroy(e);
}

void CudaStepProfiler::Enable(bool on) {
  on_ = on;
  marks_.clear();
}

absl::Status CudaStepProfiler::Mark(const char* label, cudaStream_t stream) {
  if (!on_) return absl::OkStatus();
  if (marks_.size() == event_pool_.size()) {
    cudaEvent_t e = nullptr;
    CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
    event_pool_.push_back(e);
  }
  cudaEvent_t e = event_pool_[marks_.size()];
  CUDA_RETURN_IF_ERROR(cudaEventRecord(e, stream));
  marks_.push_back({label, e});
  return absl::OkStatus();
}

absl::Status CudaStepProfiler::Collect(cudaStream_t stream) {
  if (!on_ || marks_.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(Mark("end", stream));
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(marks_.back().event));
  for (size_t i = 0; i + 1 < marks_.size(); ++i) {
    float ms = 0;
    CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, marks_[i].event, marks_[i + 1].event));
    ms_[marks_[i].label] += ms;
  }
  marks_.clear();
  ++steps_;
  return absl::OkStatus();
}

void CudaStepProfiler::AddHostMs(const std::string& label, double ms) {
  if (on_) ms_[label] += ms;
}

std::map<std::string, double> CudaStepProfiler::Take(int64_t* steps) {
  *steps = std::exchange(steps_, 0);
  return std::exchange(ms_, {});
}

}  // namespace jetserve
