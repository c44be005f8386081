// JetBlock sequence ops (see ops.h): the dynamic causal conv with its carried tail, and the gated
// delta rule recurrence over each sequence's fp32 state, read and written in place.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/delta_rule.cuh"

namespace jetserve::kernels::cuda {
namespace {

constexpr int kMaxConv = 8;

// One thread per (row, channel): out = silu(Σ_j kern[t, c, j] * input(r - (W-1) + j)) where
// input(i < 0) is the carried tail. The tails are rewritten only by ConvTailKernel, after. Rows
// over blockIdx.y, channels over x (RowGrid).
__global__ void DynamicConvKernel(const float* __restrict__ u, const float* __restrict__ kern,
                                  const JetSeqDev* __restrict__ seqs,
                                  const int32_t* __restrict__ token_seq, int64_t tokens,
                                  int channels, int conv, float* __restrict__ out) {
  const int tail = conv - 1;
  for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) {
    const JetSeqDev s = seqs[token_seq[t]];
    const int64_t r = t - s.token_offset;  // row within the sequence's chunk
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < channels; c += gridDim.x * blockDim.x) {
      const int64_t idx = t * channels + c;
      const float* kr = kern + idx * conv;
      float acc = 0.0f;
      for (int j = 0; j < conv; ++j) {
        const int64_t i = r - tail + j;
        const float x =
            i < 0 ? s.conv_tail[(tail + i) * channels + c] : u[(s.token_offset + i) * channels + c];
        acc += kr[j] * x;
      }
      out[idx] = SiluF(acc);
    }
  }
}

// One thread per (sequence, channel): the new tail is the last W-1 inputs of [old tail, chunk],
// all read into registers before any is written. Sequences over blockIdx.y, striding past the
// grid's 65,535 limit.
__global__ void ConvTailKernel(const float* __restrict__ u, const JetSeqDev* __restrict__ seqs,
                               int64_t num_seqs, int64_t channels, int conv) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= channels) return;
  const int tail = conv - 1;
  for (int64_t q = blockIdx.y; q < num_seqs; q += gridDim.y) {
    const JetSeqDev s = seqs[q];
    const int64_t n = s.num_tokens;
    float vals[kMaxConv];
#pragma unroll
    for (int j = 0; j < kMaxConv - 1; ++j) {
      if (j < tail) {
        const int64_t i = n - tail + j;
        vals[j] =
            i < 0 ? s.conv_tail[(tail + i) * channels + c] : u[(s.token_offset + i) * channels + c];
      }
    }
#pragma unroll
    for (int j = 0; j < kMaxConv - 1; ++j) {
      if (j < tail) s.conv_tail[j * channels + c] = vals[j];
    }
  }
}

constexpr int kGdrCols = 32;      // columns of S per block (one per lane)
constexpr int kGdrRowGroups = 8;  // warps; warp y holds rows y, y + 8, ...
constexpr int kGdrMaxDk = 256;

// Block (sequence, head, column tile). Thread (lane jx, warp iy) keeps S[i, j] for column
// j = tile*32 + jx and rows i = iy + 8r (r < RPT) in registers across the sequence's tokens:
//   S = exp(g) S;  e = beta (v - Sᵀk);  S += k eᵀ;  o = Sᵀq.
template <int RPT>
__global__ void __launch_bounds__(kGdrCols* kGdrRowGroups)
    GdrRecurrentKernel(const float* __restrict__ q, const float* __restrict__ k,
                       const float* __restrict__ v, const float* __restrict__ g,
                       const float* __restrict__ beta, const JetSeqDev* __restrict__ seqs,
                       int heads, int dk, int dv, float* __restrict__ out) {
  __shared__ float sk[kGdrMaxDk];
  __shared__ float sq[kGdrMaxDk];
  __shared__ float red[kGdrRowGroups][kGdrCols + 1];
  const JetSeqDev s = seqs[blockIdx.x];
  const int h = blockIdx.y;
  const int jx = threadIdx.x & 31, iy = threadIdx.x >> 5;
  const int j = blockIdx.z * kGdrCols + jx;
  const bool col_ok = j < dv;
  float* S = s.state + static_cast<int64_t>(h) * dk * dv;
  float reg[RPT];
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int i = iy + kGdrRowGroups * r;
    reg[r] = (col_ok && i < dk) ? S[static_cast<int64_t>(i) * dv + j] : 0.0f;
  }
  for (int t = 0; t < s.num_tokens; ++t) {
    const int64_t row = s.token_offset + t;
    const int64_t hv = row * heads + h;  // index into g, beta
    __syncthreads();                     // the previous token's readers of sk, sq and red are done
    for (int i = threadIdx.x; i < dk; i += blockDim.x) {
      sk[i] = k[hv * dk + i];
      sq[i] = q[hv * dk + i];
    }
    __syncthreads();
    const float decay = expf(g[hv]);
    const float bt = beta[hv];
    float p = 0.0f;
#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      const int i = iy + kGdrRowGroups * r;
      if (i < dk) p += reg[r] * sk[i];
    }
    red[iy][jx] = p;
    __syncthreads();
    float ktS = 0.0f;
#pragma unroll
    for (int y = 0; y < kGdrRowGroups; ++y) ktS += red[y][jx];
    const float vj = col_ok ? v[hv * dv + j] : 0.0f;
    const float e = bt * (vj - decay * ktS);
    float po = 0.0f;
#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      const int i = iy + kGdrRowGroups * r;
      if (i < dk) {
        reg[r] = decay * reg[r] + sk[i] * e;
        po += reg[r] * sq[i];
      }
    }
    __syncthreads();  // every thread has read red
    red[iy][jx] = po;
    __syncthreads();
    if (iy == 0 && col_ok) {
      float o = 0.0f;
#pragma unroll
      for (int y = 0; y < kGdrRowGroups; ++y) o += red[y][jx];
      out[hv * dv + j] = o;
    }
  }
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int i = iy + kGdrRowGroups * r;
    if (col_ok && i < dk) S[static_cast<int64_t>(i) * dv + j] = reg[r];
  }
}

// Shared floats of GdrChunkKernel: K and Q of a chunk (padded rows), the chunk's A and QK
// matrices (padded), E, the block's state tile S [Dk][32], and the cumulative log-decay and beta.
__host__ __device__ inline size_t ChunkSharedFloats(int dk, int chunk) {
  return 2 * static_cast<size_t>(chunk) * (dk + 1) + 2 * static_cast<size_t>(chunk) * (chunk + 1) +
         static_cast<size_t>(chunk) * kGdrCols + static_cast<size_t>(dk) * kGdrCols + 2 * chunk;
}

constexpr int kMaxChunk = 64;

// The chunked form. Block (sequence, head, 32-column tile of S), 256 threads; the state tile
// lives in shared memory for the whole sequence. For a chunk of n tokens (0-based t, s), with
// γ[t] = Σ_{s<=t} g[s] and Γ_t = exp(γ[t]):
//   A[t][s]  = β_t exp(γ[t]-γ[s]) (k_t·k_s)   (s < t)
//   QK[t][s] = exp(γ[t]-γ[s]) (q_t·k_s)       (s <= t)
//   e_t = β_t (v_t - Γ_t S0ᵀk_t) - Σ_{s<t} A[t][s] e_s          (forward substitution)
//   o_t = Γ_t S0ᵀq_t + Σ_{s<=t} QK[t][s] e_s
//   S   = Γ_{n-1} S0 + Σ_s exp(γ[n-1]-γ[s]) k_s e_sᵀ
// which unrolls S_t = exp(g_t) S_{t-1} + k_t e_tᵀ exactly (see docs/performance.md). All fp32 on
// CUDA cores: the tensor-core (bf16 mma) version of the A/QK and state products is still to do.
__global__ void __launch_bounds__(kGdrCols* kGdrRowGroups)
    GdrChunkKernel(const float* __restrict__ q, const float* __restrict__ k,
                   const float* __restrict__ v, const float* __restrict__ g,
                   const float* __restrict__ beta, const JetSeqDev* __restrict__ seqs, int heads,
                   int dk, int dv, int chunk, float* __restrict__ out) {
  extern __shared__ float smem[];
  const int kp = dk + 1, cp = chunk + 1;
  float* Ks = smem;                 // [chunk][dk + 1]
  float* Qs = Ks + chunk * kp;      // [chunk][dk + 1]
  float* A = Qs + chunk * kp;       // [chunk][chunk + 1]
  float* QK = A + chunk * cp;       // [chunk][chunk + 1]
  float* E = QK + chunk * cp;       // [chunk][32]
  float* S = E + chunk * kGdrCols;  // [dk][32]
  float* gam = S + dk * kGdrCols;   // [chunk] cumulative log-decay
  float* bet = gam + chunk;         // [chunk]
  const JetSeqDev sq = seqs[blockIdx.x];
  const int h = blockIdx.y;
  const int jx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int j = blockIdx.z * kGdrCols + jx;
  const bool col_ok = j < dv;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  float* Sg = sq.state + static_cast<int64_t>(h) * dk * dv;
  for (int i = ty; i < dk; i += kGdrRowGroups) {
    S[i * kGdrCols + jx] = col_ok ? Sg[static_cast<int64_t>(i) * dv + j] : 0.0f;
  }
  constexpr int kPerThread = kMaxChunk / kGdrRowGroups;  // rows t = ty + 8m of a chunk
  for (int c0 = 0; c0 < sq.num_tokens; c0 += chunk) {
    const int n = min(chunk, sq.num_tokens - c0);
    __syncthreads();  // the previous chunk is done with every shared array
    for (int e = tid; e < n * dk; e += nthreads) {
      const int t = e / dk, i = e % dk;
      const int64_t hv = (static_cast<int64_t>(sq.token_offset) + c0 + t) * heads + h;
      Ks[t * kp + i] = k[hv * dk + i];
      Qs[t * kp + i] = q[hv * dk + i];
    }
    if (tid == 0) {
      float acc = 0.0f;
      for (int t = 0; t < n; ++t) {
        const int64_t hv = (static_cast<int64_t>(sq.token_offset) + c0 + t) * heads + h;
        acc += g[hv];
        gam[t] = acc;
        bet[t] = beta[hv];
      }
    }
    __syncthreads();
    // A and QK.
    for (int e = tid; e < n * n; e += nthreads) {
      const int t = e / n, s = e % n;
      float a = 0.0f, qk = 0.0f;
      if (s <= t) ChunkPairScores(Ks, Qs, kp, dk, gam, bet, t, s, &a, &qk);
      A[t * cp + s] = a;
      QK[t * cp + s] = qk;
    }
    // S0ᵀk_t and S0ᵀq_t for this thread's rows t = ty + 8m; B into E.
    float qs[kPerThread];
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int t = ty + kGdrRowGroups * m;
      qs[m] = 0.0f;
      if (t < n) {
        float ks_acc = 0.0f, qs_acc = 0.0f;
        for (int i = 0; i < dk; ++i) {
          const float sij = S[i * kGdrCols + jx];
          ks_acc += Ks[t * kp + i] * sij;
          qs_acc += Qs[t * kp + i] * sij;
        }
        const int64_t hv = (static_cast<int64_t>(sq.token_offset) + c0 + t) * heads + h;
        const float vt = col_ok ? v[hv * dv + j] : 0.0f;
        E[t * kGdrCols + jx] = bet[t] * (vt - expf(gam[t]) * ks_acc);
        qs[m] = qs_acc;
      }
    }
    __syncthreads();
    // Forward substitution, one lane per column (warp 0): E[t] -= Σ_{s<t} A[t][s] E[s].
    if (ty == 0) {
      for (int t = 1; t < n; ++t) {
        float acc = E[t * kGdrCols + jx];
        for (int s = 0; s < t; ++s) acc -= A[t * cp + s] * E[s * kGdrCols + jx];
        E[t * kGdrCols + jx] = acc;
      }
    }
    __syncthreads();
    // Outputs.
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int t = ty + kGdrRowGroups * m;
      if (t < n && col_ok) {
        float o = expf(gam[t]) * qs[m];
        for (int s = 0; s <= t; ++s) o += QK[t * cp + s] * E[s * kGdrCols + jx];
        const int64_t hv = (static_cast<int64_t>(sq.token_offset) + c0 + t) * heads + h;
        out[hv * dv + j] = o;
      }
    }
    // State: each thread its own elements S[i][jx], i = ty + 8r (read above only by itself... and
    // by every thread of the column in the S0ᵀk products, which finished before the barrier).
    const float last = gam[n - 1];
    const float total = expf(last);
    for (int i = ty; i < dk; i += kGdrRowGroups) {
      float acc = total * S[i * kGdrCols + jx];
      for (int s = 0; s < n; ++s)
        acc += expf(last - gam[s]) * Ks[s * kp + i] * E[s * kGdrCols + jx];
      S[i * kGdrCols + jx] = acc;
    }
  }
  __syncthreads();
  for (int i = ty; i < dk; i += kGdrRowGroups) {
    if (col_ok) Sg[static_cast<int64_t>(i) * dv + j] = S[i * kGdrCols + jx];
  }
}

// The launch limits both delta-rule forms share: Dk fits the kernels' shared arrays, and the
// sequences, heads and 32-column tiles of S fit the grid's dimensions.
absl::Status CheckGdrShape(const char* op, const JetShapeDev& shape, int64_t num_seqs) {
  const int64_t dk = shape.key_dim, dv = shape.value_dim, heads = shape.heads;
  if (dk < 1 || dk > kGdrMaxDk || dv < 1 || heads < 1 || heads > 65535 || num_seqs < 0 ||
      CeilDiv(dv, kGdrCols) > 65535 || num_seqs > (int64_t{1} << 31) - 1) {
    return ShapeError(op, absl::StrCat("key_dim ", dk, " (1..", kGdrMaxDk, "), value_dim ", dv,
                                       ", heads ", heads, ", ", num_seqs, " sequences"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DynamicCausalConv(const float* u, const float* kern, const JetSeqDev* seqs,
                               int64_t num_seqs, const int32_t* token_seq, int64_t tokens,
                               const JetShapeDev& shape, float* out, cudaStream_t stream) {
  const int64_t channels = shape.channels();
  if (shape.conv_size < 1 || shape.conv_size > kMaxConv || channels < 1 ||
      channels > (int64_t{1} << 30) || num_seqs < 0 || tokens < 0) {
    return ShapeError("DynamicCausalConv",
                      absl::StrCat("conv_size ", shape.conv_size, " (1..", kMaxConv, "), channels ",
                                   channels, ", ", num_seqs, " sequences"));
  }
  if (tokens > 0) {
    DynamicConvKernel<<<RowGrid(tokens, channels, 256), 256, 0, stream>>>(
        u, kern, seqs, token_seq, tokens, static_cast<int>(channels),
        static_cast<int>(shape.conv_size), out);
    CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  if (num_seqs > 0 && shape.conv_size > 1) {
    const dim3 grid(static_cast<unsigned>(CeilDiv(channels, 128)),
                    static_cast<unsigned>(std::min<int64_t>(num_seqs, 65535)));
    ConvTailKernel<<<grid, 128, 0, stream>>>(u, seqs, num_seqs, channels,
                                             static_cast<int>(shape.conv_size));
    CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  return absl::OkStatus();
}

absl::Status GatedDeltaRuleRecurrent(const float* q, const float* k, const float* v, const float* g,
                                     const float* beta, const JetSeqDev* seqs, int64_t num_seqs,
                                     const JetShapeDev& shape, float* out, cudaStream_t stream) {
  if (absl::Status s = CheckGdrShape("GatedDeltaRuleRecurrent", shape, num_seqs); !s.ok()) return s;
  const int64_t dk = shape.key_dim, dv = shape.value_dim, heads = shape.heads;
  if (num_seqs == 0) return absl::OkStatus();
  absl::StatusOr<bool> warps =
      LaunchGdrRecurrentWarps(q, k, v, g, beta, seqs, num_seqs, shape, out, stream);
  if (!warps.ok() || *warps) return warps.status();
  const dim3 grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(heads),
                  static_cast<unsigned>(CeilDiv(dv, kGdrCols)));
  const dim3 block(kGdrCols * kGdrRowGroups);
  const int rows_per_thread = static_cast<int>(CeilDiv(dk, kGdrRowGroups));
  const int h = static_cast<int>(heads), ik = static_cast<int>(dk), iv = static_cast<int>(dv);
  if (rows_per_thread <= 4) {
    GdrRecurrentKernel<4><<<grid, block, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  } else if (rows_per_thread <= 8) {
    GdrRecurrentKernel<8><<<grid, block, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  } else if (rows_per_thread <= 12) {
    GdrRecurrentKernel<12><<<grid, block, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  } else if (rows_per_thread <= 16) {
    GdrRecurrentKernel<16><<<grid, block, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  } else {
    GdrRecurrentKernel<32><<<grid, block, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  }
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status GatedDeltaRuleChunked(const float* q, const float* k, const float* v, const float* g,
                                   const float* beta, const JetSeqDev* seqs, int64_t num_seqs,
                                   int64_t max_tokens, const JetShapeDev& shape, float* out,
                                   cudaStream_t stream) {
  if (absl::Status s = CheckGdrShape("GatedDeltaRuleChunked", shape, num_seqs); !s.ok()) return s;
  const int64_t dk = shape.key_dim, dv = shape.value_dim, heads = shape.heads;
  if (num_seqs == 0) return absl::OkStatus();
  const int chunk = dk <= 128 ? 64 : 32;
  const size_t shared = ChunkSharedFloats(static_cast<int>(dk), chunk) * sizeof(float);
  static size_t configured = 0;
  if (absl::Status s = AllowDynamicShared(GdrChunkKernel, shared, &configured); !s.ok()) return s;
  const dim3 grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(heads),
                  static_cast<unsigned>(CeilDiv(dv, kGdrCols)));
  GdrChunkKernel<<<grid, kGdrCols * kGdrRowGroups, shared, stream>>>(
      q, k, v, g, beta, seqs, static_cast<int>(heads), static_cast<int>(dk), static_cast<int>(dv),
      chunk, out);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace jetserve::kernels::cuda
