#include "kernels/cuda/linear.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace jetserve::kernels::cuda {

absl::StatusOr<std::unique_ptr<CublasLtLinear>> CublasLtLinear::Create(int64_t workspace_bytes) {
  std::unique_ptr<CublasLtLinear> l(new CublasLtLinear());
  CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&l->handle_));
  if (workspace_bytes > 0) {
    CUDA_RETURN_IF_ERROR(cudaMalloc(&l->workspace_, workspace_bytes));
    l->workspace_bytes_ = workspace_bytes;
  }
  return l;
}

CublasLtLinear::~CublasLtLinear() {
  for (auto& [key, p] : plans_) {
    if (p.a != nullptr) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b != nullptr) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c != nullptr) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc != nullptr) cublasLtMatmulDescDestroy(p.desc);
  }
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

// Row-major y[T, O] = x[T, K] W[O, K]ᵀ is, column-major, y'[O, T] = op(A) B with A = W stored
// as a K x O column-major matrix (ld K) transposed, and B = x as K x T (ld K).
absl::StatusOr<CublasLtLinear::Plan*> CublasLtLinear::GetPlan(int64_t tokens, int64_t rows,
                                                              int64_t cols) {
  const auto key = std::make_tuple(tokens, rows, cols);
  if (auto it = plans_.find(key); it != plans_.end()) return &it->second;
  Plan p;
  // Stored before any early return so the destructor frees what was created.
  auto cleanup = [&]() {
    if (p.a != nullptr) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b != nullptr) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c != nullptr) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc != nullptr) cublasLtMatmulDescDestroy(p.desc);
  };
  auto create = [&]() -> absl::Status {
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, cols, rows, cols));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, cols, tokens, cols));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, rows, tokens, rows));
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = static_cast<size_t>(workspace_bytes_);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof(ws));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c,
                                                             pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    CUBLAS_RETURN_IF_ERROR(st);
    if (found < 1) {
      return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for a bf16 GEMM of ",
                                              tokens, " x ", cols, " by ", rows, " x ", cols));
    }
    p.algo = result.algo;
    return absl::OkStatus();
  };
  if (absl::Status s = create(); !s.ok()) {
    cleanup();
    // Remembered, so the heuristic is not asked again for this shape.
    Plan fallback;
    fallback.fallback = true;
    return &plans_.emplace(key, fallback).first->second;
  }
  return &plans_.emplace(key, p).first->second;
}

absl::Status CublasLtLinear::Prepare(int64_t tokens, int64_t rows, int64_t cols) {
  return GetPlan(tokens, rows, cols).status();
}

absl::Status CublasLtLinear::Linear(const bf16_t* x, int64_t tokens, const bf16_t* w,
                                    int64_t rows, int64_t cols, float* y, cudaStream_t stream) {
  if (tokens < 0 || rows < 1 || cols < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Linear: bad shape tokens ", tokens, ", rows ", rows, ", cols ", cols));
  }
  if (tokens == 0) return absl::OkStatus();
  // cuBLASLt's bf16 kernels want 16-byte aligned rows of x, W (cols % 8) and y (rows % 4).
  if (cols % 8 != 0 || rows % 4 != 0) return GemmBf16Fallback(x, tokens, w, rows, cols, y, stream);
  absl::StatusOr<Plan*> plan = GetPlan(tokens, rows, cols);
  if (!plan.ok()) return plan.status();
  if ((*plan)->fallback) return GemmBf16Fallback(x, tokens, w, rows, cols, y, stream);
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, (*plan)->desc, &alpha, w, (*plan)->a, x,
                                        (*plan)->b, &beta, y, (*plan)->c, y, (*plan)->c,
                                        &(*plan)->algo, workspace_,
                                        static_cast<size_t>(workspace_bytes_), stream));
  return absl::OkStatus();
}

}  // namespace jetserve::kernels::cuda
