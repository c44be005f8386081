// CudaBackend in a build without CUDA: every way in reports that.
#include "absl/status/status.h"
#include "engine/cuda_backend.h"

namespace jetserve {

struct CudaBackend::Impl {};

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(const Model&,
                                                                 const CudaBackendOptions&) {
  return absl::UnimplementedError(
      "this jetserve was built without CUDA (configure with -DJETSERVE_CUDA=ON and nvcc)");
}
std::string CudaBackend::name() const { return "cuda"; }
absl::Status CudaBackend::AttachMemory(HybridMemory&) {
  return absl::UnimplementedError("no CUDA");
}
absl::Status CudaBackend::Forward(const ForwardBatch&, HybridMemory&, std::vector<float>*) {
  return absl::UnimplementedError("no CUDA");
}
absl::Status CudaBackend::ForwardGreedy(const ForwardBatch&, HybridMemory&, std::vector<int32_t>*) {
  return absl::UnimplementedError("no CUDA");
}
bool CudaBackend::CanSample(const SamplingParams&) const { return false; }
absl::Status CudaBackend::ForwardKeepLogits(const ForwardBatch&, HybridMemory&) {
  return absl::UnimplementedError("no CUDA");
}
absl::Status CudaBackend::SampleLast(const std::vector<SampleSpec>&, std::vector<SampledToken>*) {
  return absl::UnimplementedError("no CUDA");
}
void CudaBackend::StateSlotHandedOut(int32_t) {}
void CudaBackend::Forked(const SequenceMemory&, const SequenceMemory&, int64_t) {}
int64_t CudaBackend::weight_bytes() const { return 0; }
int64_t CudaBackend::pool_bytes() const { return 0; }
int CudaBackend::sm_count() const { return 0; }
bool CudaBackend::incremental_tables() const { return false; }
std::string CudaBackend::device_name() const { return ""; }
absl::Status CudaBackend::Synchronize() { return absl::UnimplementedError("no CUDA"); }
void CudaBackend::SetProfiling(bool) {}
std::map<std::string, double> CudaBackend::TakeProfile(int64_t* steps) {
  *steps = 0;
  return {};
}

}  // namespace jetserve
