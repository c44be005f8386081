// The JetBlock's sequence ops: dynamic causal convolution with a carried tail, the gated delta
// rule recurrence with a carried fp32 state, and the per-head gated RMSNorm.
#ifndef JETSERVE_KERNELS_CPU_JET_OPS_H_
#define JETSERVE_KERNELS_CPU_JET_OPS_H_

#include <cstdint>

namespace jetserve::kernels::cpu {

// One sequence's slice of a flat token batch, with its carried jet-layer state.
struct JetSeq {
  int64_t token_offset = 0;
  int64_t num_tokens = 0;
  float* state = nullptr;      // [heads, key_dim, value_dim] recurrent state S, updated in place
  float* conv_tail = nullptr;  // [conv_size-1, channels]: the last inputs u, oldest first
};

struct JetShape {
  int64_t heads = 0;      // Hj
  int64_t key_dim = 0;    // Dk per head
  int64_t value_dim = 0;  // Dv per head
  int64_t conv_size = 0;  // W
  int64_t channels() const { return heads * value_dim; }
};

// v[t, c] = silu(Σ_j kern[t, c, j] * u[t - W + 1 + j, c]) with u before the sequence's first
// token read from conv_tail (zeros for a new sequence); then conv_tail holds the last W-1 u.
// u: [tokens, channels]; kern: [tokens, channels, W] (W fastest); out: [tokens, channels].
void DynamicCausalConv(const float* u, const float* kern, const JetSeq* seqs, int64_t num_seqs,
                       const JetShape& shape, float* out);

// Gated delta rule per token and head, state S [Dk, Dv]:
//   S = exp(g) S;  e = beta (v - Sᵀk);  S += k eᵀ;  o = Sᵀq.
// q, k: [tokens, heads, Dk]; v: [tokens, heads, Dv]; g, beta: [tokens, heads];
// out: [tokens, heads, Dv].
void GatedDeltaRule(const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const JetSeq* seqs, int64_t num_seqs, const JetShape& shape,
                    float* out);

// o[t, h] = RMSNorm(o[t, h]; w, eps) * silu(gate[t, h]) per head, in place.
// o, gate: [tokens, heads, Dv]; w: [Dv].
void GatedRmsNorm(float* o, const float* gate, const float* w, int64_t tokens, int64_t heads,
                  int64_t dim, float eps);

// From the raw projections a, b: [tokens, heads] (overwritten):
//   g = -exp(A_log) * softplus(a + dt_bias)   (into a);   beta = sigmoid(b)   (into b).
void JetGates(float* a, float* b, const float* a_log, const float* dt_bias, int64_t tokens,
              int64_t heads);

}  // namespace jetserve::kernels::cpu

#endif  // JETSERVE_KERNELS_CPU_JET_OPS_H_
