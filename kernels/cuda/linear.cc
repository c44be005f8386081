#include "kernels/cuda/linear.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace jetserve::kernels::cuda {
namespace {

// cuBLASLt is opened with dlopen when the first CublasLtLinear is created, not linked: loading
// libcublasLt.so at process start (it is large) broke civetweb's start-up in the CPU server
// (prometheus-cpp's metrics endpoint: "null context when constructing CivetServer"), and a
// CPU-only run has no use for it.
struct LtApi {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtDestroy) destroy = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  absl::Status status = absl::OkStatus();
};

const LtApi& Lt() {
  static LtApi api;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string versioned = absl::StrCat("libcublasLt.so.", CUBLAS_VER_MAJOR);
    void* h = dlopen(versioned.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) h = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      api.status = absl::FailedPreconditionError(
          absl::StrCat("cannot load cuBLASLt (", versioned, "): ", dlerror()));
      return;
    }
    bool ok = true;
    auto get = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (fn == nullptr) ok = false;
    };
    get(api.create, "cublasLtCreate");
    get(api.destroy, "cublasLtDestroy");
    get(api.desc_create, "cublasLtMatmulDescCreate");
    get(api.desc_destroy, "cublasLtMatmulDescDestroy");
    get(api.desc_set, "cublasLtMatmulDescSetAttribute");
    get(api.layout_create, "cublasLtMatrixLayoutCreate");
    get(api.layout_destroy, "cublasLtMatrixLayoutDestroy");
    get(api.pref_create, "cublasLtMatmulPreferenceCreate");
    get(api.pref_destroy, "cublasLtMatmulPreferenceDestroy");
    get(api.pref_set, "cublasLtMatmulPreferenceSetAttribute");
    get(api.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    get(api.matmul, "cublasLtMatmul");
    if (!ok) api.status = absl::FailedPreconditionError("cuBLASLt lacks an expected function");
  });
  return api;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CublasLtLinear>> CublasLtLinear::Create(int64_t workspace_bytes) {
  if (!Lt().status.ok()) return Lt().status;
  std::unique_ptr<CublasLtLinear> l(new CublasLtLinear());
  CUBLAS_RETURN_IF_ERROR(Lt().create(&l->handle_));
  if (workspace_bytes > 0) {
    CUDA_RETURN_IF_ERROR(cudaMalloc(&l->workspace_, workspace_bytes));
    l->workspace_bytes_ = workspace_bytes;
  }
  // What every heuristic query asks for: algorithms within the workspace.
  CUBLAS_RETURN_IF_ERROR(Lt().pref_create(&l->pref_));
  const size_t ws = static_cast<size_t>(l->workspace_bytes_);
  CUBLAS_RETURN_IF_ERROR(
      Lt().pref_set(l->pref_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  return l;
}

CublasLtLinear::~CublasLtLinear() {
  for (auto& [key, p] : plans_) {
    if (p.a != nullptr) Lt().layout_destroy(p.a);
    if (p.b != nullptr) Lt().layout_destroy(p.b);
    if (p.c != nullptr) Lt().layout_destroy(p.c);
    if (p.desc != nullptr) Lt().desc_destroy(p.desc);
  }
  if (pref_ != nullptr) Lt().pref_destroy(pref_);
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) Lt().destroy(handle_);
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
    if (p.a != nullptr) Lt().layout_destroy(p.a);
    if (p.b != nullptr) Lt().layout_destroy(p.b);
    if (p.c != nullptr) Lt().layout_destroy(p.c);
    if (p.desc != nullptr) Lt().desc_destroy(p.desc);
  };
  auto create = [&]() -> absl::Status {
    CUBLAS_RETURN_IF_ERROR(Lt().desc_create(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    CUBLAS_RETURN_IF_ERROR(
        Lt().desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    CUBLAS_RETURN_IF_ERROR(
        Lt().desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    CUBLAS_RETURN_IF_ERROR(Lt().layout_create(&p.a, CUDA_R_16BF, cols, rows, cols));
    CUBLAS_RETURN_IF_ERROR(Lt().layout_create(&p.b, CUDA_R_16BF, cols, tokens, cols));
    CUBLAS_RETURN_IF_ERROR(Lt().layout_create(&p.c, CUDA_R_32F, rows, tokens, rows));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    CUBLAS_RETURN_IF_ERROR(
        Lt().heuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref_, 1, &result, &found));
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

cublasStatus_t CublasLtLinear::Run(const Plan& plan, const cublasLtMatmulAlgo_t& algo,
                                   const bf16_t* x, const bf16_t* w, float* y,
                                   cudaStream_t stream) {
  const float alpha = 1.0f, beta = 0.0f;
  return Lt().matmul(handle_, plan.desc, &alpha, w, plan.a, x, plan.b, &beta, y, plan.c, y, plan.c,
                     &algo, workspace_, static_cast<size_t>(workspace_bytes_), stream);
}

absl::Status CublasLtLinear::Tune(Plan& plan, const bf16_t* x, const bf16_t* w, float* y,
                                  cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return absl::OkStatus();  // at a later call
  plan.tuned = true;  // once per shape, whatever the outcome
  ++tuned_shapes_;
  cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
  int found = 0;
  const cublasStatus_t st = Lt().heuristic(handle_, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                           pref_, kTuneCandidates, results, &found);
  if (st != CUBLAS_STATUS_SUCCESS || found <= 1) return absl::OkStatus();  // nothing to choose
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  if (cudaError_t e = cudaEventCreate(&stop); e != cudaSuccess) {
    cudaEventDestroy(start);
    return CudaError(e, "cudaEventCreate", __FILE__, __LINE__);
  }
  auto run = [&](const cublasLtMatmulAlgo_t& algo) { return Run(plan, algo, x, w, y, stream); };
  absl::Status status = absl::OkStatus();
  float best_ms = 0.0f;
  int best = -1;
  for (int i = 0; i < found && status.ok(); ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    if (run(results[i].algo) != CUBLAS_STATUS_SUCCESS) continue;  // a candidate that declines
    bool ok = cudaEventRecord(start, stream) == cudaSuccess;
    for (int r = 0; r < kTuneRuns && ok; ++r) ok = run(results[i].algo) == CUBLAS_STATUS_SUCCESS;
    if (!ok) continue;
    float ms = 0.0f;
    cudaError_t e = cudaEventRecord(stop, stream);
    if (e == cudaSuccess) e = cudaEventSynchronize(stop);
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, start, stop);
    if (e != cudaSuccess) {
      status = CudaError(e, "timing a cuBLASLt candidate", __FILE__, __LINE__);
    } else if (best < 0 || ms < best_ms) {
      best = i;
      best_ms = ms;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (best >= 0) plan.algo = results[best].algo;
  return status;
}

absl::Status CublasLtLinear::Prepare(int64_t tokens, int64_t rows, int64_t cols) {
  return GetPlan(tokens, rows, cols).status();
}

absl::Status CublasLtLinear::Linear(const bf16_t* x, int64_t tokens, const bf16_t* w, int64_t rows,
                                    int64_t cols, float* y, cudaStream_t stream) {
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
  if (tuning_ && !(*plan)->tuned) {
    if (absl::Status s = Tune(**plan, x, w, y, stream); !s.ok()) return s;
  }
  CUBLAS_RETURN_IF_ERROR(Run(**plan, (*plan)->algo, x, w, y, stream));
  return absl::OkStatus();
}

}  // namespace jetserve::kernels::cuda
