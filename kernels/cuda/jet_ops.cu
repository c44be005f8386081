// JetBlock sequence ops (see ops.h): the dynamic causal conv with its carried tail, and the gated
// delta rule recurrence over each sequence's fp32 state, read and written in place.
#include "kernels/cuda/common.cuh"

namespace jetserve::kernels::cuda {
namespace {

constexpr int kMaxConv = 8;

// One thread per (row, channel): out = silu(Σ_j kern[t, c, j] * input(r - (W-1) + j)) where
// input(i < 0) is the carried tail. The tails are rewritten only by ConvTailKernel, after.
__global__ void DynamicConvKernel(const float* __restrict__ u, const float* __restrict__ kern,
                                  const JetSeqDev* __restrict__ seqs,
                                  const int32_t* __restrict__ token_seq, int64_t tokens,
                                  int64_t channels, int conv, float* __restrict__ out) {
  const int64_t n = tokens * channels;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = idx / channels, c = idx % channels;
    const JetSeqDev s = seqs[token_seq[t]];
    const int64_t r = t - s.token_offset;  // row within the sequence's chunk
    const int tail = conv - 1;
    const float* kr = kern + idx * conv;
    float acc = 0.0f;
    for (int j = 0; j < conv; ++j) {
      const int64_t i = r - tail + j;
      const float x = i < 0 ? s.conv_tail[(tail + i) * channels + c]
                            : u[(s.token_offset + i) * channels + c];
      acc += kr[j] * x;
    }
    out[idx] = SiluF(acc);
  }
}

// One thread per (sequence, channel): the new tail is the last W-1 inputs of [old tail, chunk],
// all read into registers before any is written.
__global__ void ConvTailKernel(const float* __restrict__ u, const JetSeqDev* __restrict__ seqs,
                               int64_t channels, int conv) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= channels) return;
  const JetSeqDev s = seqs[blockIdx.y];
  const int tail = conv - 1;
  const int64_t n = s.num_tokens;
  float vals[kMaxConv];
#pragma unroll
  for (int j = 0; j < kMaxConv - 1; ++j) {
    if (j < tail) {
      const int64_t i = n - tail + j;
      vals[j] = i < 0 ? s.conv_tail[(tail + i) * channels + c]
                      : u[(s.token_offset + i) * channels + c];
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxConv - 1; ++j) {
    if (j < tail) s.conv_tail[j * channels + c] = vals[j];
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
    __syncthreads();  // the previous token's readers of sk, sq and red are done
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

}  // namespace

absl::Status DynamicCausalConv(const float* u, const float* kern, const JetSeqDev* seqs,
                               int64_t num_seqs, const int32_t* token_seq, int64_t tokens,
                               const JetShapeDev& shape, float* out, cudaStream_t stream) {
  const int64_t channels = shape.channels();
  if (shape.conv_size < 1 || shape.conv_size > kMaxConv || channels < 1 || num_seqs < 0 ||
      tokens < 0 || num_seqs > 65535) {
    return ShapeError("DynamicCausalConv",
                      absl::StrCat("conv_size ", shape.conv_size, " (1..", kMaxConv,
                                   "), channels ", channels, ", ", num_seqs, " sequences"));
  }
  if (tokens > 0) {
    DynamicConvKernel<<<GridFor(tokens * channels, 256), 256, 0, stream>>>(
        u, kern, seqs, token_seq, tokens, channels, static_cast<int>(shape.conv_size), out);
    CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  if (num_seqs > 0 && shape.conv_size > 1) {
    const dim3 grid(static_cast<unsigned>(CeilDiv(channels, 128)),
                    static_cast<unsigned>(num_seqs));
    ConvTailKernel<<<grid, 128, 0, stream>>>(u, seqs, channels,
                                             static_cast<int>(shape.conv_size));
    CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  return absl::OkStatus();
}

absl::Status GatedDeltaRuleRecurrent(const float* q, const float* k, const float* v,
                                     const float* g, const float* beta, const JetSeqDev* seqs,
                                     int64_t num_seqs, const JetShapeDev& shape, float* out,
                                     cudaStream_t stream) {
  const int64_t dk = shape.key_dim, dv = shape.value_dim, heads = shape.heads;
  if (dk < 1 || dk > kGdrMaxDk || dv < 1 || heads < 1 || heads > 65535 || num_seqs < 0 ||
      CeilDiv(dv, kGdrCols) > 65535 || num_seqs > (int64_t{1} << 31) - 1) {
    return ShapeError("GatedDeltaRuleRecurrent",
                      absl::StrCat("key_dim ", dk, " (1..", kGdrMaxDk, "), value_dim ", dv,
                                   ", heads ", heads, ", ", num_seqs, " sequences"));
  }
  if (num_seqs == 0) return absl::OkStatus();
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

absl::Status GatedDeltaRuleChunked(const float* q, const float* k, const float* v,
                                   const float* g, const float* beta, const JetSeqDev* seqs,
                                   int64_t num_seqs, int64_t max_tokens, const JetShapeDev& shape,
                                   float* out, cudaStream_t stream) {
  // Not written yet: the chunked WY/UT-transform prefill (tensor cores, chunks of 64). Prefill
  // runs GatedDeltaRuleRecurrent, which is exact but sequential over a sequence's tokens.
  return absl::UnimplementedError(
      "GatedDeltaRuleChunked is not implemented yet; use GatedDeltaRuleRecurrent (exact, "
      "sequential over tokens) for prefill");
}

}  // namespace jetserve::kernels::cuda
