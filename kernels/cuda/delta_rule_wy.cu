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
// Two variants of each kernel: fp32 on CUDA cores (JETSERVE_CUDA_GDR=wy), and the chunk's dense
// products — W = T·(βΓK), U = T·(βV), and the state kernel's W·S, Q·S, QK·E, Kᵀ·E — on tensor
// cores as tf32 wmma tiles with fp32 accumulation (kTc; JETSERVE_CUDA_GDR=wy_tc). The state
// stays fp32 in shared memory and slots either way. tests/gpu/gdr_wy_emulation.py checks the
// decomposition and the indexing against the recurrence in float64.
#include <mma.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/delta_rule.cuh"

namespace jetserve::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWyThreads = 256;
constexpr int kWyCols = 32;                         // columns of S (and V) per tile: one per lane
constexpr int kWyRowGroups = kWyThreads / kWyCols;  // 8 warps
constexpr int kWyWarps = kWyRowGroups;
constexpr int kWyMaxChunk = 64;
constexpr int kWyRowsPerThread = kWyMaxChunk / kWyRowGroups;  // chunk rows t = warp + 8m
constexpr int kWyMaxDk = 256;

int WyChunk(int64_t dk) { return dk <= 128 ? 64 : 32; }

// Both kernels' shared-memory layouts (float offsets), for (dk, chunk) and the variant. Every
// array starts on 8 floats (32 bytes: wmma's loads need it). For tensor cores the dimensions are
// padded to the 16 x 16 x 8 tiles (zeros in the padding) and row strides are multiples of 4
// floats, as wmma's loads and stores need; the CUDA-core variant keeps odd strides where lanes
// read down a column.
struct WyLayout {
  int dkp;  // dk, padded to 16 for tensor cores
  // GdrWyPrepKernel.
  int ldk;  // K and Q rows: dk + 1; for tensor cores the regions are sized for rows of ldb too
  int ldb;  // tensor cores: βΓ·K (in Q's region) and W's output (in K's region): dkp + 4
  int ldc;  // A and T: chunk + 1, or chunk + 4
  int ldv;  // a V tile and U's output: 32, or 36
  size_t ks, qs, a, t, vs, gam, bet, bg, prep_floats;
  // GdrWyStateKernel.
  int ldx;  // W, then Γ·Q, then decayed K rows: dk + 1, or dkp + 4
  int lds;  // the state tile, E and O: 32, or 36
  int ldq;  // QK: chunk + 1, or chunk + 4
  size_t x, s, e, qk, o, sgam, state_floats;
};

WyLayout MakeWyLayout(int dk, int chunk, bool tc) {
  WyLayout L{};
  L.dkp = tc ? static_cast<int>(CeilDiv(dk, 16) * 16) : dk;
  L.ldk = dk + 1;
  L.ldb = L.dkp + 4;
  L.ldc = tc ? chunk + 4 : chunk + 1;
  L.ldv = tc ? kWyCols + 4 : kWyCols;
  const size_t rows_kq = static_cast<size_t>(tc ? std::max(L.ldk, L.ldb) : L.ldk);
  size_t at = 0;
  auto take = [&](size_t floats) {
    const size_t here = at;
    at = static_cast<size_t>(CeilDiv(static_cast<int64_t>(at + floats), 8) * 8);
    return here;
  };
  L.ks = take(chunk * rows_kq);
  L.qs = take(chunk * rows_kq);
  L.a = take(static_cast<size_t>(chunk) * std::max(L.ldc, L.ldv));  // A, then U's output
  L.t = take(static_cast<size_t>(chunk) * L.ldc);
  L.vs = take(static_cast<size_t>(chunk) * L.ldv);
  L.gam = take(chunk);
  L.bet = take(chunk);
  L.bg = take(chunk);
  L.prep_floats = at;
  L.ldx = tc ? L.dkp + 4 : dk + 1;
  L.lds = tc ? kWyCols + 4 : kWyCols;
  L.ldq = tc ? chunk + 4 : chunk + 1;
  at = 0;
  L.x = take(static_cast<size_t>(chunk) * L.ldx);
  L.s = take(static_cast<size_t>(L.dkp) * L.lds);
  L.e = take(static_cast<size_t>(chunk) * L.lds);
  L.qk = take(static_cast<size_t>(chunk) * L.ldq);
  L.o = take(tc ? static_cast<size_t>(chunk) * L.lds : 0);
  L.sgam = take(chunk);
  L.state_floats = at;
  return L;
}

// ---- tf32 tensor-core tiles (one warp each) ----

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragAt = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

template <typename Frag>
__device__ __forceinline__ void ToTf32(Frag& f, float sign) {
#pragma unroll
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = sign * wmma::__float_to_tf32(f.x[i]);
}

// Calls f(m0, n0) for this warp's 16 x 16 tiles of a [16·row_tiles, 16·col_tiles] output, the
// block's warps taking the tiles in turn (warp-uniform: every lane of a warp makes the calls).
template <typename F>
__device__ __forceinline__ void ForWarpTiles(int row_tiles, int col_tiles, F f) {
  for (int tile = threadIdx.x / 32; tile < row_tiles * col_tiles; tile += kWyWarps) {
    f(tile / col_tiles * 16, tile % col_tiles * 16);
  }
}

// acc += sign · A[m0:m0+16, 0:k] · B[0:k, n0:n0+16], k a multiple of 8. B row-major [k][ldb];
// A row-major [.][lda], or (kATransposed) stored transposed: A[m][kk] at a[kk * lda + m].
template <bool kATransposed>
__device__ __forceinline__ void MmaTf32(FragC& acc, const float* a, int lda, const float* b,
                                        int ldb, int m0, int n0, int k, float sign) {
  for (int k0 = 0; k0 < k; k0 += 8) {
    FragB fb;
    wmma::load_matrix_sync(fb, b + k0 * ldb + n0, ldb);
    ToTf32(fb, 1.0f);
    if constexpr (kATransposed) {
      FragAt fa;
      wmma::load_matrix_sync(fa, a + k0 * lda + m0, lda);
      ToTf32(fa, sign);
      wmma::mma_sync(acc, fa, fb, acc);
    } else {
      FragA fa;
      wmma::load_matrix_sync(fa, a + m0 * lda + k0, lda);
      ToTf32(fa, sign);
      wmma::mma_sync(acc, fa, fb, acc);
    }
  }
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
template <bool kTc>
__global__ void __launch_bounds__(kWyThreads)
    GdrWyPrepKernel(const float* __restrict__ q, const float* __restrict__ k,
                    const float* __restrict__ v, const float* __restrict__ g,
                    const float* __restrict__ beta, const JetSeqDev* __restrict__ seqs, int heads,
                    int dk, int dv, int chunk, WyLayout L, WyWorkspace ws) {
  extern __shared__ __align__(32) float smem[];
  const JetSeqDev sq = seqs[blockIdx.x];
  const int h = blockIdx.y;
  const int c0 = blockIdx.z * chunk;
  if (c0 >= sq.num_tokens) return;  // whole block, before any barrier
  const int n = min(chunk, sq.num_tokens - c0);
  const int kp = L.ldk, cp = L.ldc;
  float* Ks = smem + L.ks;    // [chunk][ldk]; tensor cores: then W's output [chunk][ldb]
  float* Qs = smem + L.qs;    // [chunk][ldk]; tensor cores: then βΓ·K [chunk][ldb]
  float* A = smem + L.a;      // [chunk][ldc]; tensor cores: then U's output [chunk][ldv]
  float* Tm = smem + L.t;     // [chunk][ldc]
  float* Vs = smem + L.vs;    // [chunk][ldv]
  float* gam = smem + L.gam;  // [chunk]
  float* bet = smem + L.bet;  // [chunk]
  float* bg = smem + L.bg;    // [chunk] β_s Γ_s
  const int tid = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(sq.token_offset) + c0;
  for (int e = tid; e < n * dk; e += kWyThreads) {
    const int t = e / dk, i = e % dk;
    const int64_t hv = (row0 + t) * heads + h;
    Ks[t * kp + i] = k[hv * dk + i];
    Qs[t * kp + i] = q[hv * dk + i];
  }
  if constexpr (kTc) {  // T's padding (rows and columns n..chunk) must be zeros for its tiles
    for (int e = tid; e < chunk * cp; e += kWyThreads) Tm[e] = 0.0f;
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
  if constexpr (kTc) {
    // βΓ·K with zero padding, into Q's region (Q was last read by the scores).
    for (int e = tid; e < chunk * L.dkp; e += kWyThreads) {
      const int s = e / L.dkp, i = e % L.dkp;
      Qs[s * L.ldb + i] = s < n && i < dk ? bg[s] * Ks[s * kp + i] : 0.0f;
    }
  }
  __syncthreads();

  // W = T diag(βΓ) K.
  if constexpr (kTc) {
    float* Wo = Ks;  // K was last read above
    ForWarpTiles(chunk / 16, L.dkp / 16, [&](int m0, int n0) {
      FragC acc;
      wmma::fill_fragment(acc, 0.0f);
      MmaTf32<false>(acc, Tm, cp, Qs, L.ldb, m0, n0, chunk, 1.0f);
      wmma::store_matrix_sync(Wo + m0 * L.ldb + n0, acc, L.ldb, wmma::mem_row_major);
    });
    __syncthreads();
    for (int e = tid; e < n * dk; e += kWyThreads) {
      const int t = e / dk, i = e % dk;
      ws.w[((row0 + t) * heads + h) * dk + i] = Wo[t * L.ldb + i];
    }
  } else {
    for (int e = tid; e < n * dk; e += kWyThreads) {
      const int t = e / dk, i = e % dk;
      float acc = 0.0f;
      for (int s = 0; s <= t; ++s) acc += Tm[t * cp + s] * bg[s] * Ks[s * kp + i];
      ws.w[((row0 + t) * heads + h) * dk + i] = acc;
    }
  }

  // U = T diag(β) V, a 32-column tile of V at a time: lane jx its column, warp ty rows ty + 8m.
  const int jx = tid % kWyCols, ty = tid / kWyCols;
  const int vrows = kTc ? chunk : n;  // tensor cores: zero rows past n
  for (int j0 = 0; j0 < dv; j0 += kWyCols) {
    const int j = j0 + jx;
    __syncthreads();  // the previous tile's readers of Vs (and of U's output) are done
    for (int t = ty; t < vrows; t += kWyRowGroups) {
      Vs[t * L.ldv + jx] = t < n && j < dv ? bet[t] * v[((row0 + t) * heads + h) * dv + j] : 0.0f;
    }
    __syncthreads();
    if constexpr (kTc) {
      float* Uo = A;  // A was last read by the T solve
      ForWarpTiles(chunk / 16, kWyCols / 16, [&](int m0, int n0) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
        MmaTf32<false>(acc, Tm, cp, Vs, L.ldv, m0, n0, chunk, 1.0f);
        wmma::store_matrix_sync(Uo + m0 * L.ldv + n0, acc, L.ldv, wmma::mem_row_major);
      });
      __syncthreads();
      if (j < dv) {
        for (int t = ty; t < n; t += kWyRowGroups) {
          ws.u[((row0 + t) * heads + h) * dv + j] = Uo[t * L.ldv + jx];
        }
      }
    } else if (j < dv) {
      for (int t = ty; t < n; t += kWyRowGroups) {
        float acc = 0.0f;
        for (int s = 0; s <= t; ++s) acc += Tm[t * cp + s] * Vs[s * L.ldv + jx];
        ws.u[((row0 + t) * heads + h) * dv + j] = acc;
      }
    }
  }
}

// Block (sequence, head, 32-column tile of S): the tile lives in shared memory across the
// sequence's chunks, read from and written back to the slot once. CUDA cores: thread (lane jx,
// warp ty) owns column jx and chunk rows t = ty + 8m (E, O) and state rows i = ty + 8r (the
// update). Tensor cores: warps own 16 x 16 tiles of E, O and S.
template <bool kTc>
__global__ void __launch_bounds__(kWyThreads)
    GdrWyStateKernel(const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ g, const JetSeqDev* __restrict__ seqs, int heads,
                     int dk, int dv, int chunk, WyLayout L, WyWorkspace ws,
                     float* __restrict__ out) {
  extern __shared__ __align__(32) float smem[];
  const int kp = L.ldx, cp = L.ldq, ls = L.lds;
  float* X = smem + L.x;       // [chunk][ldx]: W, then (Γ·)Q, then decayed K rows
  float* S = smem + L.s;       // [dkp][lds]
  float* E = smem + L.e;       // [chunk][lds]
  float* QKs = smem + L.qk;    // [chunk][ldq]
  float* O = smem + L.o;       // tensor cores: [chunk][lds]
  float* gam = smem + L.sgam;  // [chunk]
  const JetSeqDev sq = seqs[blockIdx.x];
  const int h = blockIdx.y;
  const int tid = threadIdx.x;
  const int jx = tid % kWyCols, ty = tid / kWyCols;
  const int j = blockIdx.z * kWyCols + jx;
  const bool col_ok = j < dv;
  const int rows = kTc ? chunk : 0;  // tensor cores: rows past n written as zeros, up to chunk
  float* Sg = sq.state + static_cast<int64_t>(h) * dk * dv;
  for (int i = ty; i < L.dkp; i += kWyRowGroups) {
    S[i * ls + jx] = col_ok && i < dk ? Sg[static_cast<int64_t>(i) * dv + j] : 0.0f;
  }
  for (int c0 = 0; c0 < sq.num_tokens; c0 += chunk) {
    const int n = min(chunk, sq.num_tokens - c0);
    const int64_t row0 = static_cast<int64_t>(sq.token_offset) + c0;
    const int xr = max(n, rows), xc = kTc ? L.dkp : dk;  // the rows and columns of X written
    __syncthreads();  // the previous chunk is done with X, E, QKs, γ, and its S update is visible
    for (int e = tid; e < xr * xc; e += kWyThreads) {
      const int t = e / xc, i = e % xc;
      X[t * kp + i] = t < n && i < dk ? ws.w[((row0 + t) * heads + h) * dk + i] : 0.0f;
    }
    const int qr = max(n, rows);
    for (int e = tid; e < qr * qr; e += kWyThreads) {
      const int t = e / qr, s = e % qr;
      QKs[t * cp + s] = t < n && s < n ? ws.qk[((row0 + t) * heads + h) * chunk + s] : 0.0f;
    }
    if (tid == 0) {
      float acc = 0.0f;
      for (int t = 0; t < n; ++t) {
        acc += g[(row0 + t) * heads + h];
        gam[t] = acc;
      }
    }
    if constexpr (kTc) {
      for (int t = ty; t < chunk; t += kWyRowGroups) {
        E[t * ls + jx] = t < n && col_ok ? ws.u[((row0 + t) * heads + h) * dv + j] : 0.0f;
      }
    }
    __syncthreads();
    // E = U - W S0.
    if constexpr (kTc) {
      ForWarpTiles(chunk / 16, kWyCols / 16, [&](int m0, int n0) {
        FragC acc;
        wmma::load_matrix_sync(acc, E + m0 * ls + n0, ls, wmma::mem_row_major);
        MmaTf32<false>(acc, X, kp, S, ls, m0, n0, L.dkp, -1.0f);
        wmma::store_matrix_sync(E + m0 * ls + n0, acc, ls, wmma::mem_row_major);
      });
    } else {
#pragma unroll
      for (int m = 0; m < kWyRowsPerThread; ++m) {
        const int t = ty + kWyRowGroups * m;
        if (t < n) {
          float acc = col_ok ? ws.u[((row0 + t) * heads + h) * dv + j] : 0.0f;
          for (int i = 0; i < dk; ++i) acc -= X[t * kp + i] * S[i * ls + jx];
          E[t * ls + jx] = acc;
        }
      }
    }
    __syncthreads();  // E complete; W no longer read
    for (int e = tid; e < xr * xc; e += kWyThreads) {
      const int t = e / xc, i = e % xc;
      // Tensor cores fold Γ_t into Q's rows (O = (ΓQ) S0 + QK E is then two products).
      X[t * kp + i] = t < n && i < dk
                          ? (kTc ? expf(gam[t]) : 1.0f) * q[((row0 + t) * heads + h) * dk + i]
                          : 0.0f;
    }
    __syncthreads();
    // O = diag(Γ) Q S0 + QK E.
    if constexpr (kTc) {
      ForWarpTiles(chunk / 16, kWyCols / 16, [&](int m0, int n0) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
        MmaTf32<false>(acc, X, kp, S, ls, m0, n0, L.dkp, 1.0f);
        MmaTf32<false>(acc, QKs, cp, E, ls, m0, n0, chunk, 1.0f);
        wmma::store_matrix_sync(O + m0 * ls + n0, acc, ls, wmma::mem_row_major);
      });
      __syncthreads();
      if (col_ok) {
        for (int t = ty; t < n; t += kWyRowGroups) {
          out[((row0 + t) * heads + h) * dv + j] = O[t * ls + jx];
        }
      }
    } else {
#pragma unroll
      for (int m = 0; m < kWyRowsPerThread; ++m) {
        const int t = ty + kWyRowGroups * m;
        if (t < n && col_ok) {
          float qs = 0.0f;
          for (int i = 0; i < dk; ++i) qs += X[t * kp + i] * S[i * ls + jx];
          float o = expf(gam[t]) * qs;
          for (int s = 0; s <= t; ++s) o += QKs[t * cp + s] * E[s * ls + jx];
          out[((row0 + t) * heads + h) * dv + j] = o;
        }
      }
    }
    __syncthreads();  // Q and S0 no longer read
    const float last = gam[n - 1];
    for (int e = tid; e < xr * xc; e += kWyThreads) {
      const int t = e / xc, i = e % xc;
      X[t * kp + i] =
          t < n && i < dk ? expf(last - gam[t]) * k[((row0 + t) * heads + h) * dk + i] : 0.0f;
    }
    __syncthreads();
    // S = Γ_{n-1} S0 + Kdᵀ E.
    const float total = expf(last);
    if constexpr (kTc) {
      ForWarpTiles(L.dkp / 16, kWyCols / 16, [&](int m0, int n0) {
        FragC acc;
        wmma::load_matrix_sync(acc, S + m0 * ls + n0, ls, wmma::mem_row_major);
#pragma unroll
        for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= total;
        MmaTf32<true>(acc, X, kp, E, ls, m0, n0, chunk, 1.0f);
        wmma::store_matrix_sync(S + m0 * ls + n0, acc, ls, wmma::mem_row_major);
      });
    } else {
      for (int i = ty; i < dk; i += kWyRowGroups) {
        float acc = total * S[i * ls + jx];
        for (int s = 0; s < n; ++s) acc += X[s * kp + i] * E[s * ls + jx];
        S[i * ls + jx] = acc;
      }
    }
  }
  __syncthreads();
  for (int i = ty; i < dk; i += kWyRowGroups) {
    if (col_ok) Sg[static_cast<int64_t>(i) * dv + j] = S[i * ls + jx];
  }
}

template <bool kTc>
absl::Status LaunchWy(const float* q, const float* k, const float* v, const float* g,
                      const float* beta, const JetSeqDev* seqs, int64_t num_seqs, int64_t heads,
                      int64_t dk, int64_t dv, int64_t chunks, int chunk, const WyWorkspace& ws,
                      float* out, cudaStream_t stream) {
  const int idk = static_cast<int>(dk), idv = static_cast<int>(dv), ih = static_cast<int>(heads);
  const WyLayout layout = MakeWyLayout(idk, chunk, kTc);
  static size_t prep_configured = 0, state_configured = 0;  // per variant
  const size_t prep_bytes = layout.prep_floats * sizeof(float);
  const size_t state_bytes = layout.state_floats * sizeof(float);
  if (absl::Status s = AllowDynamicShared(GdrWyPrepKernel<kTc>, prep_bytes, &prep_configured);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = AllowDynamicShared(GdrWyStateKernel<kTc>, state_bytes, &state_configured);
      !s.ok()) {
    return s;
  }
  const dim3 prep_grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(heads),
                       static_cast<unsigned>(chunks));
  GdrWyPrepKernel<kTc><<<prep_grid, kWyThreads, prep_bytes, stream>>>(q, k, v, g, beta, seqs, ih,
                                                                      idk, idv, chunk, layout, ws);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  const dim3 state_grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(heads),
                        static_cast<unsigned>(CeilDiv(dv, kWyCols)));
  GdrWyStateKernel<kTc><<<state_grid, kWyThreads, state_bytes, stream>>>(
      q, k, g, seqs, ih, idk, idv, chunk, layout, ws, out);
  CUDA_RETURN_IF_LAUNCH_ERROR();
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
                              float* workspace, float* out, cudaStream_t stream,
                              bool tensor_cores) {
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
  return tensor_cores ? LaunchWy<true>(q, k, v, g, beta, seqs, num_seqs, heads, dk, dv, chunks,
                                       chunk, ws, out, stream)
                      : LaunchWy<false>(q, k, v, g, beta, seqs, num_seqs, heads, dk, dv, chunks,
                                        chunk, ws, out, stream);
}

}  // namespace jetserve::kernels::cuda
