// The instruction-set-specific bodies of Linear (y = x Wᵀ + b), chosen by linear.cc at run time.
// Internal to the CPU kernels.
//
// Every path computes each output as 8 (AVX2) or 16 (AVX-512) lane-wise partial sums over k in
// increasing order, combined in a fixed tree at the end. Tiles of tokens × rows, K blocks and
// the thread partition only decide *when* an output's steps run, never their order, so a
// token's result does not depend on the batch it is in, its place in it, or the thread count.
#ifndef JETSERVE_KERNELS_CPU_GEMM_H_
#define JETSERVE_KERNELS_CPU_GEMM_H_

#include <cstdint>

#include "kernels/cpu/linear.h"
#include "kernels/cpu/thread_pool.h"

namespace jetserve::kernels::cpu::internal {

// AVX2 + FMA + F16C. Weights bf16/f16 are widened to fp32 in registers; fp32 FMA.
void GemmAvx2(ThreadPool& pool, const float* x, int64_t tokens, const WeightMatrix& w,
              const float* bias, float* y);

// AVX-512 with vdpbf16ps for bf16 weights: x is split into bf16 hi + lo parts (x ≈ hi + lo to
// ~16 bits), each multiplied exactly against the bf16 weights and summed in fp32, so accuracy
// stays close to fp32 activations. Other weight dtypes fall back to GemmAvx2.
void GemmAvx512Bf16(ThreadPool& pool, const float* x, int64_t tokens, const WeightMatrix& w,
                    const float* bias, float* y);

}  // namespace jetserve::kernels::cpu::internal

#endif  // JETSERVE_KERNELS_CPU_GEMM_H_
