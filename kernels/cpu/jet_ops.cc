#include "kernels/cpu/jet_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/thread_pool.h"

namespace jetserve::kernels::cpu {
namespace {

inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }

// PyTorch's softplus: linear above threshold 20 to avoid overflow.
inline float Softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// One head of one sequence over its tokens, state S [Dk, Dv] updated in place. The inner loops
// run over Dv contiguous floats; the AVX2/FMA clone vectorises them.
JETSERVE_TARGET_CLONES("arch=x86-64-v3", "default")
void GatedDeltaRuleHead(const float* q, const float* k, const float* v, const float* g,
                        const float* beta, int64_t first_row, int64_t num_tokens, int64_t h,
                        int64_t H, int64_t dk, int64_t dv, float* __restrict S,
                        float* __restrict err, float* __restrict out) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t row = first_row + t;
    const float* qt = q + (row * H + h) * dk;
    const float* kt = k + (row * H + h) * dk;
    const float* vt = v + (row * H + h) * dv;
    const float decay = std::exp(g[row * H + h]);
    const float bt = beta[row * H + h];
    // S = decay * S, and Sᵀk for the decayed S, in one pass.
    for (int64_t j = 0; j < dv; ++j) err[j] = 0.0f;
    for (int64_t i = 0; i < dk; ++i) {
      float* __restrict Si = S + i * dv;
      const float ki = kt[i];
      for (int64_t j = 0; j < dv; ++j) {
        Si[j] *= decay;
        err[j] += Si[j] * ki;
      }
    }
    for (int64_t j = 0; j < dv; ++j) err[j] = bt * (vt[j] - err[j]);
    // S += k eᵀ, and o = Sᵀq for the updated S.
    float* __restrict o = out + (row * H + h) * dv;
    for (int64_t j = 0; j < dv; ++j) o[j] = 0.0f;
    for (int64_t i = 0; i < dk; ++i) {
      float* __restrict Si = S + i * dv;
      const float ki = kt[i];
      const float qi = qt[i];
      for (int64_t j = 0; j < dv; ++j) {
        Si[j] += ki * err[j];
        o[j] += Si[j] * qi;
      }
    }
  }
}

}  // namespace

void DynamicCausalConv(const float* u, const float* kern, const JetSeq* seqs, int64_t num_seqs,
                       const JetShape& shape, float* out) {
  const int64_t c_total = shape.channels();
  const int64_t w = shape.conv_size;
  const int64_t tail = w - 1;
  // Channels are independent; split them across threads for every sequence.
  ThreadPool::Default().ParallelFor(c_total, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < num_seqs; ++i) {
      const JetSeq& s = seqs[i];
      const int64_t n = s.num_tokens;
      for (int64_t c = c0; c < c1; ++c) {
        // Input at chunk-relative index r (r < 0: the carried tail, oldest first). Read straight
        // from u and the tail: no per-channel buffer, so nothing to allocate.
        auto input = [&](int64_t r) {
          return r < 0 ? s.conv_tail[(tail + r) * c_total + c]
                       : u[(s.token_offset + r) * c_total + c];
        };
        for (int64_t t = 0; t < n; ++t) {
          const float* kr = kern + ((s.token_offset + t) * c_total + c) * w;
          float acc = 0.0f;
          for (int64_t j = 0; j < w; ++j) acc += kr[j] * input(t - tail + j);
          out[(s.token_offset + t) * c_total + c] = Silu(acc);
        }
        // New tail: the last W-1 inputs of [old tail, chunk], oldest first. Written in
        // increasing j, each entry reads old-tail entries at indices >= j only when n < W-1,
        // which have not been overwritten yet.
        for (int64_t j = 0; j < tail; ++j) s.conv_tail[j * c_total + c] = input(n - tail + j);
      }
    }
  });
}

void GatedDeltaRule(const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const JetSeq* seqs, int64_t num_seqs, const JetShape& shape,
                    float* out) {
  const int64_t H = shape.heads, dk = shape.key_dim, dv = shape.value_dim;
  ThreadPool::Default().ParallelFor(num_seqs * H, 1, [&](int64_t b, int64_t e) {
    // Static thread storage for the usual value widths (no allocation on a thread's first
    // call in a later step); the heap only beyond.
    constexpr int64_t kStaticDv = 1024;
    thread_local float err_static[kStaticDv];
    thread_local std::vector<float> err_heap;
    if (dv > kStaticDv && static_cast<int64_t>(err_heap.size()) < dv) err_heap.resize(dv);
    float* err = dv > kStaticDv ? err_heap.data() : err_static;
    for (int64_t w = b; w < e; ++w) {
      const JetSeq& s = seqs[w / H];
      const int64_t h = w % H;
      GatedDeltaRuleHead(q, k, v, g, beta, s.token_offset, s.num_tokens, h, H, dk, dv,
                         s.state + h * dk * dv, err, out);
    }
  });
}

void GatedRmsNorm(float* o, const float* gate, const float* w, int64_t tokens, int64_t heads,
                  int64_t dim, float eps) {
  for (int64_t r = 0; r < tokens * heads; ++r) {
    float* x = o + r * dim;
    const float* gr = gate + r * dim;
    const float inv = 1.0f / std::sqrt(Dot(x, x, dim) / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) x[i] = w[i] * (x[i] * inv) * Silu(gr[i]);
  }
}

void JetGates(float* a, float* b, const float* a_log, const float* dt_bias, int64_t tokens,
              int64_t heads) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t i = t * heads + h;
      a[i] = -std::exp(a_log[h]) * Softplus(a[i] + dt_bias[h]);
      b[i] = 1.0f / (1.0f + std::exp(-b[i]));
    }
  }
}

}  // namespace jetserve::kernels::cpu
