// Device helpers shared by the .cu files: bf16 conversion, warp and block reductions, launch
// arithmetic.
#ifndef JETSERVE_KERNELS_CUDA_COMMON_CUH_
#define JETSERVE_KERNELS_CUDA_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace jetserve::kernels::cuda {

__device__ __forceinline__ float Bf16BitsToFloat(bf16_t v) {
  return __uint_as_float(static_cast<uint32_t>(v) << 16);
}
// Round to nearest even (as kernels/dtype.h FloatToBf16); NaN stays NaN.
__device__ __forceinline__ bf16_t FloatToBf16Bits(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// Two floats as bf16 in one word, lo in the low half (memory order).
__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  return static_cast<uint32_t>(FloatToBf16Bits(lo)) |
         (static_cast<uint32_t>(FloatToBf16Bits(hi)) << 16);
}

// 8 bf16 packed in 16 bytes (element 2i in the low half of word i) as fp32.
__device__ __forceinline__ void Bf16x8BitsToFloat(const uint4& u, float* out) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(w[i] << 16);
    out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// scratch: at least 32 floats of shared memory. Synchronises; call from all threads.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(t);
}
__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : -INFINITY;
  return WarpMax(t);
}

__device__ __forceinline__ float SiluF(float x) { return x / (1.0f + expf(-x)); }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a grid-stride loop over n elements with `threads` per block.
inline unsigned GridFor(int64_t n, int threads) {
  const int64_t blocks = CeilDiv(n, threads);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

// Grid for a row-wise kernel: rows over blockIdx.y (the kernel strides by gridDim.y past 65,535),
// `col_units` columns (or groups of columns) over x in blocks of `threads`, so that no thread
// divides a 64-bit flat index per element.
inline dim3 RowGrid(int64_t rows, int64_t col_units, int threads) {
  return dim3(static_cast<unsigned>(std::clamp<int64_t>(CeilDiv(col_units, threads), 1, 65535)),
              static_cast<unsigned>(std::clamp<int64_t>(rows, 1, 65535)));
}

// Lets `kernel` launch with `bytes` of dynamic shared memory (above 48 KB it must opt in). Raised
// once per kernel to the largest size asked so far, tracked in the caller's `*configured` (a
// static per kernel), so that a CUDA-graph capture, which follows an uncaptured warm-up step,
// makes no such call.
template <typename Kernel>
absl::Status AllowDynamicShared(Kernel kernel, size_t bytes, size_t* configured) {
  if (bytes <= *configured) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
  *configured = bytes;
  return absl::OkStatus();
}

inline absl::Status ShapeError(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

}  // namespace jetserve::kernels::cuda

#endif  // JETSERVE_KERNELS_CUDA_COMMON_CUH_
