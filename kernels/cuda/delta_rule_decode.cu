// The recurrent gated delta rule with a warp per 16 columns of S (GdrRecurrentForm::kWarps,
// JETSERVE_CUDA_GDR_DECODE=warps): the decode steps' form. Off by default until it has run on a
// GPU (ops.h).
#include <atomic>
#include <cstdlib>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/delta_rule.cuh"

namespace jetserve::kernels::cuda {
namespace {

// Why: GdrRecurrentKernel (jet_ops.cu) gives a block of 8 warps 32 columns of S, each warp a
// slice of the rows, and reduces Sᵀk and Sᵀq across the warps through shared memory — four block
// barriers per token. On the H200 (Nsight Compute, 2B, batch 128) it moved 2.98 TB/s, 62% of the
// DRAM peak, its warps stalled a third of the time at those barriers and a third waiting for
// loads: a block's loads are in flight only until its first barrier. Here each warp is on its
// own: lanes c and c + 16 share column c of its 16, the first holding rows 0 .. RPT-1 of S in
// registers and the second rows RPT .. 2 RPT-1 (a row's 16 columns are 64 contiguous bytes), so
// Sᵀk and Sᵀq are one shuffle each and the only synchronisation is the warp's own, around its
// copy of the token's k and q in shared memory. Every warp keeps 2 · RPT · 64 bytes of loads in
// flight from its start (6 KB at 2B's Dk 96).
constexpr int kWarpCols = 16;
constexpr int kWarpsPerBlock = 4;

template <int RPT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    GdrRecurrentWarpKernel(const float* __restrict__ q, const float* __restrict__ k,
                           const float* __restrict__ v, const float* __restrict__ g,
                           const float* __restrict__ beta, const JetSeqDev* __restrict__ seqs,
                           int heads, int dk, int dv, float* __restrict__ out) {
  // Per warp: the token's k and q, rows of the second half one float further (RPT = 64 would
  // put a row of each half in one bank).
  __shared__ float kq[kWarpsPerBlock][2][2 * RPT + 1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int col0 = (blockIdx.z * kWarpsPerBlock + warp) * kWarpCols;
  if (col0 >= dv) return;  // the whole warp: warps never wait for each other
  const JetSeqDev s = seqs[blockIdx.x];
  const int h = blockIdx.y;
  const int half = lane >> 4;
  const int j = col0 + (lane & (kWarpCols - 1));
  const bool col_ok = j < dv;
  float* sk = kq[warp][0];
  float* sq = kq[warp][1];
  // This lane's column of S from row half * RPT: element r at Sj[r * dv] (32-bit offsets:
  // r < 64 and dv < 2^25, which the launcher checks).
  float* Sj = s.state + (static_cast<int64_t>(h) * dk + half * RPT) * dv + j;
  const int rows = min(RPT, dk - half * RPT);  // this half's rows (dk may be odd)
  float reg[RPT];                              // S[half * RPT + r][j]
#pragma unroll
  for (int r = 0; r < RPT; ++r) reg[r] = (col_ok && r < rows) ? Sj[r * dv] : 0.0f;
  for (int t = 0; t < s.num_tokens; ++t) {
    const int64_t hv = (s.token_offset + t) * static_cast<int64_t>(heads) + h;  // into g, beta
    __syncwarp();  // the previous token's reads of sk, sq are done
    for (int i = lane; i < dk; i += 32) {
      sk[i + i / RPT] = k[hv * dk + i];
      sq[i + i / RPT] = q[hv * dk + i];
    }
    __syncwarp();
    const float decay = expf(g[hv]);
    const float bt = beta[hv];
    const float* skh = sk + half * (RPT + 1);
    const float* sqh = sq + half * (RPT + 1);
    float ktS = 0.0f;
#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      if (r < rows) ktS += reg[r] * skh[r];
    }
    ktS += __shfl_xor_sync(0xffffffffu, ktS, 16);
    const float vj = col_ok ? v[hv * dv + j] : 0.0f;
    const float e = bt * (vj - decay * ktS);  // S = exp(g) S; e = β (v - Sᵀk)
    float o = 0.0f;
#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      if (r < rows) {
        reg[r] = decay * reg[r] + skh[r] * e;  // S += k eᵀ
        o += reg[r] * sqh[r];                  // o = Sᵀq
      }
    }
    o += __shfl_xor_sync(0xffffffffu, o, 16);
    if (half == 0 && col_ok) out[hv * dv + j] = o;
  }
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    if (col_ok && r < rows) Sj[r * dv] = reg[r];
  }
}

// -1: the environment's choice (JETSERVE_CUDA_GDR_DECODE=warps), else a GdrRecurrentForm.
std::atomic<int> form_override{-1};

GdrRecurrentForm FormChosen() {
  const int o = form_override.load(std::memory_order_relaxed);
  if (o >= 0) return static_cast<GdrRecurrentForm>(o);
  static const GdrRecurrentForm from_env = [] {
    const char* e = std::getenv("JETSERVE_CUDA_GDR_DECODE");
    return e != nullptr && std::string(e) == "warps" ? GdrRecurrentForm::kWarps
                                                     : GdrRecurrentForm::kBlocks;
  }();
  return from_env;
}

}  // namespace

void SetGdrRecurrentForm(std::optional<GdrRecurrentForm> form) {
  form_override.store(form.has_value() ? static_cast<int>(*form) : -1, std::memory_order_relaxed);
}

absl::StatusOr<bool> LaunchGdrRecurrentWarps(const float* q, const float* k, const float* v,
                                             const float* g, const float* beta,
                                             const JetSeqDev* seqs, int64_t num_seqs,
                                             const JetShapeDev& shape, float* out,
                                             cudaStream_t stream) {
  const int64_t dk = shape.key_dim, dv = shape.value_dim;
  if (FormChosen() != GdrRecurrentForm::kWarps || dk > 128 || dv >= (int64_t{1} << 25)) {
    return false;
  }
  const dim3 grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(shape.heads),
                  static_cast<unsigned>(CeilDiv(dv, kWarpCols * kWarpsPerBlock)));
  const int h = static_cast<int>(shape.heads), ik = static_cast<int>(dk), iv = static_cast<int>(dv);
  constexpr int kThreads = kWarpsPerBlock * 32;
  const int64_t half_rows = CeilDiv(dk, 2);
  if (half_rows <= 16) {
    GdrRecurrentWarpKernel<16>
        <<<grid, kThreads, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  } else if (half_rows <= 32) {
    GdrRecurrentWarpKernel<32>
        <<<grid, kThreads, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  } else if (half_rows <= 48) {
    GdrRecurrentWarpKernel<48>
        <<<grid, kThreads, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  } else {
    GdrRecurrentWarpKernel<64>
        <<<grid, kThreads, 0, stream>>>(q, k, v, g, beta, seqs, h, ik, iv, out);
  }
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return true;
}

}  // namespace jetserve::kernels::cuda
