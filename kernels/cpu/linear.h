// y = x Wᵀ + b with weights in their stored dtype (bf16/f16/f32) and fp32 activations.
#ifndef JETSERVE_KERNELS_CPU_LINEAR_H_
#define JETSERVE_KERNELS_CPU_LINEAR_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace jetserve::kernels::cpu {

// A row-major weight matrix [rows = out_features, cols = in_features], as HF stores it.
struct WeightMatrix {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

// x: [tokens, w.cols] fp32; bias: [w.rows] fp32 or nullptr; y: [tokens, w.rows] fp32.
// Each y[t, o] is one fp32 dot product whose order of summation depends only on w.cols, so
// results do not depend on `tokens`, on the other rows in the batch or on the thread count.
void Linear(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias, float* y);

class ThreadPool;

// Linear on `pool` (Linear uses ThreadPool::Default()), on the path ActiveIsa() names.
void LinearOn(ThreadPool& pool, const float* x, int64_t tokens, const WeightMatrix& w,
              const float* bias, float* y);

// The portable scalar path, the reference the vector paths are tested against. Same contract;
// its lanes use separate multiply and add, the vector paths fused multiply-add, so the paths
// agree to rounding, not bitwise.
void LinearReference(ThreadPool& pool, const float* x, int64_t tokens, const WeightMatrix& w,
                     const float* bias, float* y);

// Dot product of fp32 a and b over n elements, in the fixed summation order Linear uses.
float Dot(const float* a, const float* b, int64_t n);

}  // namespace jetserve::kernels::cpu

#endif  // JETSERVE_KERNELS_CPU_LINEAR_H_
