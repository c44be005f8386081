// y = x Wᵀ through cuBLASLt: bf16 x and W, fp32 accumulation and fp32 y. One instance per
// stream owner (not thread-safe); it caches a matmul plan per (rows, cols, tokens).
#ifndef JETSERVE_KERNELS_CUDA_LINEAR_H_
#define JETSERVE_KERNELS_CUDA_LINEAR_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"
#include "kernels/cuda/ops.h"

namespace jetserve::kernels::cuda {

class CublasLtLinear {
 public:
  // workspace_bytes: cuBLASLt's scratch (allocated once, so calls can be graph-captured).
  static absl::StatusOr<std::unique_ptr<CublasLtLinear>> Create(
      int64_t workspace_bytes = int64_t{32} << 20);
  ~CublasLtLinear();
  CublasLtLinear(const CublasLtLinear&) = delete;
  CublasLtLinear& operator=(const CublasLtLinear&) = delete;

  // x: [tokens, cols] bf16; w: [rows, cols] bf16 row-major (as HF stores it); y: [tokens, rows]
  // fp32. Pointers 16-byte aligned (cudaMalloc'd buffers and their row-aligned slices). Shapes
  // cuBLASLt does not take (see GemmBf16Fallback) run on the fallback kernel.
  absl::Status Linear(const bf16_t* x, int64_t tokens, const bf16_t* w, int64_t rows, int64_t cols,
                      float* y, cudaStream_t stream);

  // Plans a shape ahead (so a CUDA graph capture does not run the heuristic).
  absl::Status Prepare(int64_t tokens, int64_t rows, int64_t cols);

  // While on, the first Linear call for a shape outside a stream capture times up to
  // kTuneCandidates of cuBLASLt's heuristic candidates on the call's own operands (one warm-up
  // and kTuneRuns timed runs each, synchronising the stream) and keeps the fastest for the
  // shape; otherwise a shape runs the heuristic's first choice. Meant for the shapes a server
  // repeats (decode steps); a shape planned while off is tuned at its first call while on.
  void set_tuning(bool on) { tuning_ = on; }
  static constexpr int kTuneCandidates = 8;
  static constexpr int kTuneRuns = 3;
  // Shapes tuned so far (tests, diagnostics).
  int64_t tuned_shapes() const { return tuned_shapes_; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool fallback = false;  // cuBLASLt has no algorithm: GemmBf16Fallback
    bool tuned = false;
  };
  CublasLtLinear() = default;
  absl::StatusOr<Plan*> GetPlan(int64_t tokens, int64_t rows, int64_t cols);
  // One y = x Wᵀ with `algo` on the shape's plan.
  cublasStatus_t Run(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const bf16_t* x,
                     const bf16_t* w, float* y, cudaStream_t stream);
  absl::Status Tune(Plan& plan, const bf16_t* x, const bf16_t* w, float* y, cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulPreference_t pref_ = nullptr;  // algorithms within workspace_bytes_
  void* workspace_ = nullptr;
  int64_t workspace_bytes_ = 0;
  std::map<std::tuple<int64_t, int64_t, int64_t>, Plan> plans_;
  bool tuning_ = false;
  int64_t tuned_shapes_ = 0;
};

}  // namespace jetserve::kernels::cuda

#endif  // JETSERVE_KERNELS_CUDA_LINEAR_H_
