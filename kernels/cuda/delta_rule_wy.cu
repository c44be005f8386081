// The gated delta rule over prefill chunks in the WY / UT form, as two kernels (see ops.h,
// GatedDeltaRuleWy). For a chunk of n tokens of one (sequence, head), 0-based t, s, with the
// chunk's cumulative log-decay γ[t] = Σ_{r<=t} g[r] and Γ_t = exp(γ[t]):
//
//   A[t][s]  = β_t exp(γ[t]-γ[s]) (k_t·k_s)        (s < t; 0 elsewhere)
//   T        = (I + A)⁻¹                            (unit lower triangular)
//   W        = T diag(β Γ) K        [n, Dk]
//   U        = T diag(β) V          [n, Dv]
//   QK[t][s] = exp(γ[t]-γ[s]) (q_t·k_s)             (s <= t)
//
// none of which depends on the state, so every chunk of every sequence is one independent block
// of the first kernel (GdrWyPrepKernel). The second (GdrWyStateKernel) carries the state S
// [Dk, Dv] through a sequence's chunks in order, a 32-column tile of it per block:
//
//   E = U - W S0;   O = diag(Γ) Q S0 + QK E;   S = Γ_{n-1} S0 + (diag(exp(γ[n-1]-γ)) K)ᵀ E
//
// which is the recurrence S_t = exp(g_t) S_{t-1} + k_t e_tᵀ, e_t = β_t (v_t - exp(g_t) S_{t-1}ᵀ
// k_t), o_t = S_tᵀ q_t unrolled over the chunk ((I + A) E = β (V - diag(Γ) K S0) is its forward
// substitution). GdrChunkKernel (jet_ops.cu) does the same in one kernel per (sequence, head,
// column tile), recomputing A and QK for each of the Dv/32 column tiles and solving the
// substitution on one warp; here that work is done once per chunk and in parallel over chunks.
// All fp32 on CUDA cores; tests/gpu/gdr_wy_math.py checks the decomposition against the
// recurrence in float64.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/delta_rule.cuh"

namespace jetserve::kernels::cuda {
namespace {

constexpr int kWyThreads = 256;
constexpr int kWyCols = 32;                         // columns of S (and V) per tile: one per lane
constexpr int kWyRowGroups = kWyThreads / kWyCols;  // 8 warps
constexpr int kWyMaxChunk = 64;
constexpr int kWyRowsPerThread = kWyMaxChunk / kWyRowGroups;  // chunk rows t = warp + 8m
constexpr int kWyMaxDk = 256;

int WyChunk(int64_t dk) { return dk <= 128 ? 64 : 32; }

// Shared floats of GdrWyPrepKernel: K and Q of the chunk [chunk][dk + 1], A and T [chunk][chunk
// + 1], a 32-column tile of V [chunk][32], and γ, β, β·Γ [chunk] each.
size_t PrepSharedFloats(int dk, int chunk) {
  return 2 * static_cast<size_t>(chunk) * (dk + 1) + 2 * static_cast<size_t>(chunk) * (chunk + 1) +
         static_cast<size_t>(chunk) * kWyCols + 3 * static_cast<size_t>(chunk);
}

// Shared floats of GdrWyStateKernel: one chunk's W, then Q, then decayed K rows [chunk][dk + 1],
// the state tile [dk][32], E [chunk][32], QK [chunk][chunk + 1] and γ [chunk].
size_t StateSharedFloats(int dk, int chunk) {
  return static_cast<size_t>(chunk) * (dk + 1) + static_cast<size_t>(dk) * kWyCols +
         static_cast<size_t>(chunk) * kWyCols + static_cast<size_t>(chunk) * (chunk + 1) +
         static_cast<size_t>(chunk);
}

// The workspace's three arrays, indexed by (token row, head): W [rows, heads, dk], U [rows,
// heads, dv], QK [rows, heads, chunk] (row t of its chunk's QK, zeros past t).
struct WyWorkspace {
  float* w;
  float* u;
  float* qk;
};

WyWorkspace SplitWorkspace(float* ws, int64_t tokens, int64_t heads, int64_t dk, int64_t dv) {
  float* u = ws + tokens * heads * dk;
  return {ws, u, u + tokens * heads * dv};
}

// Block (sequence, head, chunk of the sequence); blocks past the sequence's end return at once.
__global__ void __launch_bounds__(kWyThreads)
    GdrWyPrepKernel(const float* __restrict__ q, const float* __restrict__ k,
                    const float* __restrict__ v, const float* __restrict__ g,
                    const float* __restrict__ beta, const JetSeqDev* __restrict__ seqs, int heads,
                    int dk, int dv, int chunk, WyWorkspace ws) {
  extern __shared__ float smem[];
  const JetSeqDev sq = seqs[blockIdx.x];
  const int h = blockIdx.y;
  const int c0 = blockIdx.z * chunk;
  if (c0 >= sq.num_tokens) return;  // whole block, before any barrier
  const int n = min(chunk, sq.num_tokens - c0);
  const int kp = dk + 1, cp = chunk + 1;
  float* Ks = smem;                   // [chunk][dk + 1]
  float* Qs = Ks + chunk * kp;        // [chunk][dk + 1]
  float* A = Qs + chunk * kp;         // [chunk][chunk + 1]
  float* Tm = A + chunk * cp;         // [chunk][chunk + 1]
  float* Vs = Tm + chunk * cp;        // [chunk][32]
  float* gam = Vs + chunk * kWyCols;  // [chunk]
  float* bet = gam + chunk;           // [chunk]
  float* bg = bet + chunk;            // [chunk] β_s Γ_s
  const int tid = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(sq.token_offset) + c0;
  for (int e = tid; e < n * dk; e += kWyThreads) {
    const int t = e / dk, i = e % dk;
    const int64_t hv = (row0 + t) * heads + h;
    Ks[t * kp + i] = k[hv * dk + i];
    Qs[t * kp + i] = q[hv * dk + i];
  }
  if (tid == 0) {
    float acc = 0.0f;
    for (int t = 0; t < n; ++t) {
      const int64_t hv = (row0 + t) * heads + h;
      acc += g[hv];
      gam[t] = acc;
      bet[t] = beta[hv];
      bg[t] = beta[hv] * expf(acc);
    }
  }
  __syncthreads();

  // A (strictly lower) and QK (lower, to the workspace with zeros above the diagonal and past n).
  for (int e = tid; e < n * chunk; e += kWyThreads) {
    const int t = e / chunk, s = e % chunk;
    float a = 0.0f, qk = 0.0f;
    if (s <= t) ChunkPairScores(Ks, Qs, kp, dk, gam, bet, t, s, &a, &qk);
    if (s < n) A[t * cp + s] = a;
    ws.qk[((row0 + t) * heads + h) * chunk + s] = qk;
  }
  __syncthreads();

  // T = (I + A)⁻¹, one thread per column s (columns are independent):
  // T[t][s] = [t == s] - Σ_{s<=r<t} A[t][r] T[r][s].
  if (tid < n) {
    const int s = tid;
    for (int t = 0; t < n; ++t) {
      float x = t == s ? 1.0f : 0.0f;
      for (int r = s; r < t; ++r) x -= A[t * cp + r] * Tm[r * cp + s];
      Tm[t * cp + s] = x;
    }
  }
  __syncthreads();

  // W = T diag(βΓ) K: one (t, i) per thread and step.
  for (int e = tid; e < n * dk; e += kWyThreads) {
    const int t = e / dk, i = e % dk;
    float acc = 0.0f;
    for (int s = 0; s <= t; ++s) acc += Tm[t * cp + s] * bg[s] * Ks[s * kp + i];
    ws.w[((row0 + t) * heads + h) * dk + i] = acc;
  }

  // U = T diag(β) V, a 32-column tile of V at a time: lane jx its column, warp ty rows ty + 8m.
  const int jx = tid % kWyCols, ty = tid / kWyCols;
  for (int j0 = 0; j0 < dv; j0 += kWyCols) {
    const int j = j0 + jx;
    __syncthreads();  // the previous tile's readers of Vs are done
    for (int t = ty; t < n; t += kWyRowGroups) {
      Vs[t * kWyCols + jx] = j < dv ? bet[t] * v[((row0 + t) * heads + h) * dv + j] : 0.0f;
    }
    __syncthreads();
    if (j < dv) {
      for (int t = ty; t < n; t += kWyRowGroups) {
        float acc = 0.0f;
        for (int s = 0; s <= t; ++s) acc += Tm[t * cp + s] * Vs[s * kWyCols + jx];
        ws.u[((row0 + t) * heads + h) * dv + j] = acc;
      }
    }
  }
}

// Block (sequence, head, 32-column tile of S): the tile lives in shared memory across the
// sequence's chunks, read from and written back to the slot once. Thread (lane jx, warp ty)
// owns column jx and chunk rows t = ty + 8m (E, O) and state rows i = ty + 8r (the update).
__global__ void __launch_bounds__(kWyThreads)
    GdrWyStateKernel(const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ g, const JetSeqDev* __restrict__ seqs, int heads,
                     int dk, int dv, int chunk, WyWorkspace ws, float* __restrict__ out) {
  extern __shared__ float smem[];
  const int kp = dk + 1, cp = chunk + 1;
  float* X = smem;                   // [chunk][dk + 1]: W, then Q, then decayed K rows
  float* S = X + chunk * kp;         // [dk][32]
  float* E = S + dk * kWyCols;       // [chunk][32]
  float* QKs = E + chunk * kWyCols;  // [chunk][chunk + 1]
  float* gam = QKs + chunk * cp;     // [chunk]
  const JetSeqDev sq = seqs[blockIdx.x];
  const int h = blockIdx.y;
  const int tid = threadIdx.x;
  const int jx = tid % kWyCols, ty = tid / kWyCols;
  const int j = blockIdx.z * kWyCols + jx;
  const bool col_ok = j < dv;
  float* Sg = sq.state + static_cast<int64_t>(h) * dk * dv;
  for (int i = ty; i < dk; i += kWyRowGroups) {
    S[i * kWyCols + jx] = col_ok ? Sg[static_cast<int64_t>(i) * dv + j] : 0.0f;
  }
  for (int c0 = 0; c0 < sq.num_tokens; c0 += chunk) {
    const int n = min(chunk, sq.num_tokens - c0);
    const int64_t row0 = static_cast<int64_t>(sq.token_offset) + c0;
    __syncthreads();  // the previous chunk is done with X, E, QKs, γ, and its S update is visible
    for (int e = tid; e < n * dk; e += kWyThreads) {
      const int t = e / dk, i = e % dk;
      X[t * kp + i] = ws.w[((row0 + t) * heads + h) * dk + i];
    }
    for (int e = tid; e < n * n; e += kWyThreads) {
      const int t = e / n, s = e % n;
      QKs[t * cp + s] = ws.qk[((row0 + t) * heads + h) * chunk + s];
    }
    if (tid == 0) {
      float acc = 0.0f;
      for (int t = 0; t < n; ++t) {
        acc += g[(row0 + t) * heads + h];
        gam[t] = acc;
      }
    }
    __syncthreads();
    // E = U - W S0.
#pragma unroll
    for (int m = 0; m < kWyRowsPerThread; ++m) {
      const int t = ty + kWyRowGroups * m;
      if (t < n) {
        float acc = col_ok ? ws.u[((row0 + t) * heads + h) * dv + j] : 0.0f;
        for (int i = 0; i < dk; ++i) acc -= X[t * kp + i] * S[i * kWyCols + jx];
        E[t * kWyCols + jx] = acc;
      }
    }
    __syncthreads();  // E complete; W no longer read
    for (int e = tid; e < n * dk; e += kWyThreads) {
      const int t = e / dk, i = e % dk;
      X[t * kp + i] = q[((row0 + t) * heads + h) * dk + i];
    }
    __syncthreads();
    // O = diag(Γ) Q S0 + QK E.
#pragma unroll
    for (int m = 0; m < kWyRowsPerThread; ++m) {
      const int t = ty + kWyRowGroups * m;
      if (t < n && col_ok) {
        float qs = 0.0f;
        for (int i = 0; i < dk; ++i) qs += X[t * kp + i] * S[i * kWyCols + jx];
        float o = expf(gam[t]) * qs;
        for (int s = 0; s <= t; ++s) o += QKs[t * cp + s] * E[s * kWyCols + jx];
        out[((row0 + t) * heads + h) * dv + j] = o;
      }
    }
    __syncthreads();  // Q and S0 no longer read
    const float last = gam[n - 1];
    for (int e = tid; e < n * dk; e += kWyThreads) {
      const int t = e / dk, i = e % dk;
      X[t * kp + i] = expf(last - gam[t]) * k[((row0 + t) * heads + h) * dk + i];
    }
    __syncthreads();
    // S = Γ_{n-1} S0 + Kdᵀ E: each thread its own elements.
    const float total = expf(last);
    for (int i = ty; i < dk; i += kWyRowGroups) {
      float acc = total * S[i * kWyCols + jx];
      for (int s = 0; s < n; ++s) acc += X[s * kp + i] * E[s * kWyCols + jx];
      S[i * kWyCols + jx] = acc;
    }
  }
  __syncthreads();
  for (int i = ty; i < dk; i += kWyRowGroups) {
    if (col_ok) Sg[static_cast<int64_t>(i) * dv + j] = S[i * kWyCols + jx];
  }
}

// Raises a kernel's dynamic shared memory limit once to the largest size asked so far.
template <typename Kernel>
absl::Status AllowSharedBytes(Kernel kernel, size_t bytes, size_t* configured) {
  if (bytes <= 48 * 1024 || bytes <= *configured) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
  *configured = bytes;
  return absl::OkStatus();
}

}  // namespace

int64_t GatedDeltaRuleWyWorkspaceFloats(int64_t tokens, const JetShapeDev& shape) {
  return std::max<int64_t>(tokens, 0) * shape.heads *
         (shape.key_dim + shape.value_dim + WyChunk(shape.key_dim));
}

absl::Status GatedDeltaRuleWy(const float* q, const float* k, const float* v, const float* g,
                              const float* beta, const JetSeqDev* seqs, int64_t num_seqs,
                              int64_t tokens, int64_t max_tokens, const JetShapeDev& shape,
                              float* workspace, float* out, cudaStream_t stream) {
  const int64_t dk = shape.key_dim, dv = shape.value_dim, heads = shape.heads;
  const int chunk = WyChunk(dk);
  const int64_t chunks = CeilDiv(std::max<int64_t>(max_tokens, 1), chunk);
  if (dk < 1 || dk > kWyMaxDk || dv < 1 || heads < 1 || heads > 65535 || num_seqs < 0 ||
      num_seqs > (int64_t{1} << 31) - 1 || CeilDiv(dv, kWyCols) > 65535 || chunks > 65535 ||
      tokens < 0 || max_tokens < 0 || max_tokens > tokens) {
    return ShapeError(
        "GatedDeltaRuleWy",
        absl::StrCat("key_dim ", dk, " (1..", kWyMaxDk, "), value_dim ", dv, ", heads ", heads,
                     ", ", num_seqs, " sequences, ", tokens, " tokens, the longest ", max_tokens));
  }
  if (num_seqs == 0 || tokens == 0) return absl::OkStatus();
  if (workspace == nullptr) return ShapeError("GatedDeltaRuleWy", "no workspace");
  const WyWorkspace ws = SplitWorkspace(workspace, tokens, heads, dk, dv);
  const int idk = static_cast<int>(dk), idv = static_cast<int>(dv), ih = static_cast<int>(heads);

  static size_t prep_configured = 0, state_configured = 0;
  const size_t prep_bytes = PrepSharedFloats(idk, chunk) * sizeof(float);
  const size_t state_bytes = StateSharedFloats(idk, chunk) * sizeof(float);
  if (absl::Status s = AllowSharedBytes(GdrWyPrepKernel, prep_bytes, &prep_configured); !s.ok()) {
    return s;
  }
  if (absl::Status s = AllowSharedBytes(GdrWyStateKernel, state_bytes, &state_configured);
      !s.ok()) {
    return s;
  }
  const dim3 prep_grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(heads),
                       static_cast<unsigned>(chunks));
  GdrWyPrepKernel<<<prep_grid, kWyThreads, prep_bytes, stream>>>(q, k, v, g, beta, seqs, ih, idk,
                                                                 idv, chunk, ws);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  const dim3 state_grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(heads),
                        static_cast<unsigned>(CeilDiv(dv, kWyCols)));
  GdrWyStateKernel<<<state_grid, kWyThreads, state_bytes, stream>>>(q, k, g, seqs, ih, idk, idv,
                                                                    chunk, ws, out);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace jetserve::kernels::cuda
