// The CUDA backend of Model::Forward: device weights (bf16), device pools indexed like the
// HybridMemory's slots / rings / KV blocks (fp32 jet state and conv tails, bf16 KV pages and
// swa rings), step workspace, cuBLASLt and one stream. See docs/performance.md "CUDA backend".
// Declared in every build; without CUDA (JETSERVE_HAVE_CUDA unset) Create fails with a clear
// error, so --device cuda is an error, not a crash, on CPU-only builds and machines.
#ifndef JETSERVE_ENGINE_CUDA_BACKEND_H_
#define JETSERVE_ENGINE_CUDA_BACKEND_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/memory/hybrid_memory.h"
#include "engine/model.h"

namespace jetserve {

struct CudaBackendOptions {
  int device = 0;
};

class CudaBackend : public ForwardBackend, public MemoryObserver {
 public:
  // Uploads `model`'s weights; `model` must outlive the backend (it is attached to it).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const Model& model,
                                                             const CudaBackendOptions& options);
  ~CudaBackend() override;

  std::string name() const override;
  int64_t kv_element_bytes() const override { return 2; }  // bf16 KV pages and swa rings
  absl::Status AttachMemory(HybridMemory& memory) override;
  absl::Status Forward(const ForwardBatch& batch, HybridMemory& memory,
                       std::vector<float>* logits) override;
  // Sampling on the device (kernels/cuda/sampling.h; top_logprobs up to 20): the engine's path.
  bool CanSample(const SamplingParams& params) const override;
  absl::Status ForwardKeepLogits(const ForwardBatch& batch, HybridMemory& memory) override;
  absl::Status SampleLast(const std::vector<SampleSpec>& specs,
                          std::vector<SampledToken>* tokens) override;

  // Forward with greedy sampling on the device: only the ids ([rows]) come back. Decode steps
  // (one token per sequence) replay CUDA graphs captured per batch bucket.
  absl::Status ForwardGreedy(const ForwardBatch& batch, HybridMemory& memory,
                             std::vector<int32_t>* ids);

  void StateSlotHandedOut(int32_t slot) override;
  void Forked(const SequenceMemory& from, const SequenceMemory& to, int64_t tokens) override;

  int64_t weight_bytes() const;  // device bytes of the weights
  int64_t pool_bytes() const;    // device bytes of the state, ring and KV pools
  int sm_count() const;
  // Whether block tables live on the device and only new pages are uploaded
  // (JETSERVE_CUDA_TABLES=incremental, taken when the model has jet layers).
  bool incremental_tables() const;
  std::string device_name() const;
  // Device time per group of kernels ("jet.gdr", "attn.paged", "mlp.gate_up", ...), for
  // `bench --profile`. While on, every step runs without CUDA graphs and waits for its end.
  // TakeProfile returns the milliseconds per group summed over the steps since the last call,
  // and their count.
  void SetProfiling(bool on);
  std::map<std::string, double> TakeProfile(int64_t* steps);
  // Waits for the stream (the end of a timed region).
  absl::Status Synchronize();

  struct Impl;

 private:
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CUDA_BACKEND_H_
