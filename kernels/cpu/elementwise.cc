#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"

namespace jetserve::kernels::cpu {
namespace {

inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }

// Sum of squares in a fixed order (shared with Linear's Dot), so a row's norm does not depend
// on which rows were batched with it.
inline float SumSquares(const float* x, int64_t n) { return Dot(x, x, n); }

}  // namespace

void EmbeddingGather(const WeightMatrix& table, const int32_t* ids, int64_t tokens, float* out) {
  const int64_t dim = table.cols;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t base = static_cast<int64_t>(ids[t]) * dim;
    for (int64_t i = 0; i < dim; ++i)
      out[t * dim + i] = LoadAsFloat(table.data, table.dtype, base + i);
  }
}

JETSERVE_TARGET_CLONES("arch=x86-64-v3", "default")
void RmsNorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    const float inv = 1.0f / std::sqrt(SumSquares(xr, dim) / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) o[i] = w[i] * (xr[i] * inv);
  }
}

void AddRmsNorm(float* residual, const float* delta, const float* w, int64_t rows, int64_t dim,
                float eps, float* out) {
  AddInPlace(residual, delta, rows * dim);
  RmsNorm(residual, w, rows, dim, eps, out);
}

JETSERVE_TARGET_CLONES("arch=x86-64-v3", "default")
void AddInPlace(float* residual, const float* delta, int64_t n) {
  for (int64_t i = 0; i < n; ++i) residual[i] += delta[i];
}

void SiluMul(const float* gate, const float* up, int64_t rows, int64_t dim, float* out) {
  const int64_t n = rows * dim;
  ThreadPool::Default().ParallelFor(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = Silu(gate[i]) * up[i];
  });
}

void SiluInPlace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = Silu(x[i]);
}

void Rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          double theta) {
  const int64_t half = head_dim / 2;
  thread_local std::vector<float> cos_table, sin_table;
  cos_table.resize(half);
  sin_table.resize(half);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // inv_freq in fp32 as the HF implementation computes it, angle in fp32.
      const float inv_freq =
          static_cast<float>(1.0 / std::pow(theta, static_cast<double>(2 * i) / head_dim));
      const float angle = static_cast<float>(positions[t]) * inv_freq;
      cos_table[i] = std::cos(angle);
      sin_table[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * cos_table[i] - b * sin_table[i];
        v[i + half] = b * cos_table[i] + a * sin_table[i];
      }
    }
  }
}

JETSERVE_TARGET_CLONES("arch=x86-64-v3", "default")
void L2NormHeads(float* x, int64_t rows, int64_t heads, int64_t dim, float eps, float scale) {
  for (int64_t r = 0; r < rows * heads; ++r) {
    float* v = x + r * dim;
    const float inv = scale / std::sqrt(SumSquares(v, dim) + eps);
    for (int64_t i = 0; i < dim; ++i) v[i] *= inv;
  }
}

JETSERVE_TARGET_CLONES("arch=x86-64-v3", "default")
void Axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void LogSoftmax(const float* logits, int64_t n, float* out) {
  double max = logits[0];
  for (int64_t i = 1; i < n; ++i) max = std::max<double>(max, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_z = max + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(logits[i] - log_z);
}

}  // namespace jetserve::kernels::cpu
