#include "kernels/cpu/linear.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/thread_pool.h"

namespace jetserve::kernels::cpu {
namespace {

// Rows of W converted to fp32 at a time: enough to reuse each converted row across the tokens of
// a prefill chunk while it is in cache.
constexpr int64_t kRowBlock = 16;
// Tokens processed against one block of converted rows, so x stays in cache too.
constexpr int64_t kTokenBlock = 64;

// Eight independent partial sums, combined pairwise at the end: a fixed order that vectorises.
JETSERVE_TARGET_CLONES("avx2", "default") float DotImpl(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  const float s0 = (acc[0] + acc[4]) + (acc[1] + acc[5]);
  const float s1 = (acc[2] + acc[6]) + (acc[3] + acc[7]);
  return s0 + s1;
}

// The same summation order as DotImpl, reading b as bf16: the decode path (no conversion
// buffer) and the prefill path give bitwise equal results.
JETSERVE_TARGET_CLONES("avx2", "default")
float DotBf16Impl(const float* a, const uint16_t* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) {
      const uint32_t bits = static_cast<uint32_t>(b[i + j]) << 16;
      float w;
      __builtin_memcpy(&w, &bits, 4);
      acc[j] += a[i + j] * w;
    }
  }
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * Bf16ToFloat(b[i]);
  const float s0 = (acc[0] + acc[4]) + (acc[1] + acc[5]);
  const float s1 = (acc[2] + acc[6]) + (acc[3] + acc[7]);
  return s0 + s1;
}

JETSERVE_TARGET_CLONES("avx2", "default")
void ConvertRow(const void* data, DType dtype, int64_t offset, int64_t n, float* out) {
  switch (dtype) {
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
        __builtin_memcpy(&out[i], &bits, 4);
      }
      break;
    }
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = F16ToFloat(p[i]);
      break;
    }
    case DType::kF32:
      std::copy_n(static_cast<const float*>(data) + offset, n, out);
      break;
  }
}

}  // namespace

float Dot(const float* a, const float* b, int64_t n) { return DotImpl(a, b, n); }

// y[t, r0 + r] = row_dot(r, x[t]) + bias for a block of rows and every token, tokens in blocks
// so that the rows and a block of x stay in cache together.
template <typename RowDot>
void RowBlockTimesTokens(const float* x, int64_t tokens, int64_t in, int64_t out, int64_t r0,
                         int64_t nr, const float* bias, float* y, RowDot row_dot) {
  for (int64_t t0 = 0; t0 < tokens; t0 += kTokenBlock) {
    const int64_t t1 = std::min(tokens, t0 + kTokenBlock);
    for (int64_t r = 0; r < nr; ++r) {
      const float b = bias != nullptr ? bias[r0 + r] : 0.0f;
      for (int64_t t = t0; t < t1; ++t) y[t * out + r0 + r] = row_dot(r, x + t * in) + b;
    }
  }
}

void Linear(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias, float* y) {
  LinearOn(ThreadPool::Default(), x, tokens, w, bias, y);
}

void LinearOn(ThreadPool& pool, const float* x, int64_t tokens, const WeightMatrix& w,
              const float* bias, float* y) {
  if (tokens <= 0 || w.rows <= 0) return;
  switch (ActiveIsa()) {
    case Isa::kAvx512Bf16:
      internal::GemmAvx512Bf16(pool, x, tokens, w, bias, y);
      return;
    case Isa::kAvx2:
      internal::GemmAvx2(pool, x, tokens, w, bias, y);
      return;
    case Isa::kScalar:
      LinearReference(pool, x, tokens, w, bias, y);
      return;
  }
}

void LinearReference(ThreadPool& pool, const float* x, int64_t tokens, const WeightMatrix& w,
                     const float* bias, float* y) {
  const int64_t in = w.cols;
  const int64_t out = w.rows;
  const int64_t row_blocks = (out + kRowBlock - 1) / kRowBlock;
  pool.ParallelFor(row_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t rb = begin; rb < end; ++rb) {
      const int64_t r0 = rb * kRowBlock;
      const int64_t nr = std::min(kRowBlock, out - r0);
      switch (w.dtype) {
        case DType::kBF16: {
          // Read in place: converting a bf16 row costs about as much as using it.
          const uint16_t* rows = static_cast<const uint16_t*>(w.data) + r0 * in;
          RowBlockTimesTokens(x, tokens, in, out, r0, nr, bias, y, [&](int64_t r, const float* xt) {
            return DotBf16Impl(xt, rows + r * in, in);
          });
          break;
        }
        case DType::kF32: {
          const float* rows = static_cast<const float*>(w.data) + r0 * in;
          RowBlockTimesTokens(x, tokens, in, out, r0, nr, bias, y, [&](int64_t r, const float* xt) {
            return DotImpl(xt, rows + r * in, in);
          });
          break;
        }
        case DType::kF16: {
          // Per-thread scratch reused across calls: no allocation once warmed up.
          thread_local std::vector<float> rows;
          if (static_cast<int64_t>(rows.size()) < kRowBlock * in) rows.resize(kRowBlock * in);
          for (int64_t r = 0; r < nr; ++r)
            ConvertRow(w.data, w.dtype, (r0 + r) * in, in, &rows[r * in]);
          RowBlockTimesTokens(x, tokens, in, out, r0, nr, bias, y, [&](int64_t r, const float* xt) {
            return DotImpl(xt, rows.data() + r * in, in);
          });
          break;
        }
      }
    }
  });
}

}  // namespace jetserve::kernels::cpu
