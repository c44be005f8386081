// Element-wise and per-row ops of the forward pass, fp32 math.
#ifndef JETSERVE_KERNELS_CPU_ELEMENTWISE_H_
#define JETSERVE_KERNELS_CPU_ELEMENTWISE_H_

#include <cstdint>

#include "kernels/cpu/linear.h"
#include "kernels/dtype.h"

namespace jetserve::kernels::cpu {

// out[t, :] = table[ids[t], :] as fp32. table: [vocab, dim]; out: [tokens, dim].
void EmbeddingGather(const WeightMatrix& table, const int32_t* ids, int64_t tokens, float* out);

// out[t] = w * x[t] / sqrt(mean(x[t]²) + eps). x, out: [rows, dim]; w: [dim]. out may alias x.
void RmsNorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* out);

// residual[t] += delta[t]; then out[t] = RmsNorm(residual[t]). residual, delta, out: [rows, dim].
void AddRmsNorm(float* residual, const float* delta, const float* w, int64_t rows, int64_t dim,
                float eps, float* out);

// residual[i] += delta[i] over n elements.
void AddInPlace(float* residual, const float* delta, int64_t n);

// out[t, i] = silu(gate[t, i]) * up[t, i]. gate, up, out: [rows, dim]; out may alias gate.
void SiluMul(const float* gate, const float* up, int64_t rows, int64_t dim, float* out);

// x[i] = silu(x[i]) over n elements.
void SiluInPlace(float* x, int64_t n);

// Rotate-half RoPE in place on x: [tokens, heads, head_dim] at positions[tokens]:
// pairs (i, i + head_dim/2) rotated by angle position * theta^(-2i/head_dim).
void Rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          double theta);

// Per-head L2 normalisation x / sqrt(sum(x²) + eps), then scale: x: [rows, heads, dim].
void L2NormHeads(float* x, int64_t rows, int64_t heads, int64_t dim, float eps, float scale);

// y[i] += a * x[i] over n elements.
void Axpy(float a, const float* x, float* y, int64_t n);

// Log-softmax of one row of logits, in double for accuracy. out may alias logits.
void LogSoftmax(const float* logits, int64_t n, float* out);

}  // namespace jetserve::kernels::cpu

#endif  // JETSERVE_KERNELS_CPU_ELEMENTWISE_H_
