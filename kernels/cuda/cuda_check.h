// Checked CUDA runtime and cuBLASLt calls that turn a failure into an absl::Status naming the
// call, the error and the file:line, for host code that drives the CUDA kernels.
#ifndef JETSERVE_KERNELS_CUDA_CUDA_CHECK_H_
#define JETSERVE_KERNELS_CUDA_CUDA_CHECK_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace jetserve::kernels::cuda {

inline absl::Status CudaError(cudaError_t e, const char* what, const char* file, int line) {
  return absl::InternalError(absl::StrCat(what, " failed: ", cudaGetErrorName(e), " (",
                                          cudaGetErrorString(e), ") at ", file, ":", line));
}

inline absl::Status CublasError(cublasStatus_t s, const char* what, const char* file, int line) {
  return absl::InternalError(
      absl::StrCat(what, " failed: cuBLAS status ", static_cast<int>(s), " at ", file, ":", line));
}

}  // namespace jetserve::kernels::cuda

// Returns an InternalError from the enclosing function when the CUDA runtime call fails.
#define CUDA_RETURN_IF_ERROR(expr)                                                                \
  do {                                                                                            \
    const cudaError_t jetserve_cuda_err_ = (expr);                                                \
    if (jetserve_cuda_err_ != cudaSuccess) {                                                      \
      return ::jetserve::kernels::cuda::CudaError(jetserve_cuda_err_, #expr, __FILE__, __LINE__); \
    }                                                                                             \
  } while (0)

// The same after a kernel launch: reports launch-configuration errors (not asynchronous ones).
#define CUDA_RETURN_IF_LAUNCH_ERROR() CUDA_RETURN_IF_ERROR(cudaGetLastError())

#define CUBLAS_RETURN_IF_ERROR(expr)                                                      \
  do {                                                                                    \
    const cublasStatus_t jetserve_cublas_st_ = (expr);                                    \
    if (jetserve_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                   \
      return ::jetserve::kernels::cuda::CublasError(jetserve_cublas_st_, #expr, __FILE__, \
                                                    __LINE__);                            \
    }                                                                                     \
  } while (0)

#endif  // JETSERVE_KERNELS_CUDA_CUDA_CHECK_H_
