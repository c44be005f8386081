// Device code the two chunked forms of the gated delta rule share (jet_ops.cu's GdrChunkKernel,
// delta_rule_wy.cu's GdrWyPrepKernel).
#ifndef JETSERVE_KERNELS_CUDA_DELTA_RULE_CUH_
#define JETSERVE_KERNELS_CUDA_DELTA_RULE_CUH_

namespace jetserve::kernels::cuda {

// Entry (t, s) of a chunk's A and QK, for s <= t (both are 0 above the diagonal):
//   A[t][s] = β_t exp(γ[t]-γ[s]) (k_t·k_s) for s < t, 0 on the diagonal;
//   QK[t][s] = exp(γ[t]-γ[s]) (q_t·k_s).
// ks, qs: the chunk's K and Q rows [chunk][ld] (shared memory); gam: the cumulative log-decay;
// bet: β.
__device__ __forceinline__ void ChunkPairScores(const float* ks, const float* qs, int ld, int dk,
                                                const float* gam, const float* bet, int t, int s,
                                                float* a, float* qk) {
  const float* kt = ks + t * ld;
  const float* qt = qs + t * ld;
  const float* kss = ks + s * ld;
  float dkk = 0.0f, dqk = 0.0f;
  for (int i = 0; i < dk; ++i) {
    dkk += kt[i] * kss[i];
    dqk += qt[i] * kss[i];
  }
  const float decay = expf(gam[t] - gam[s]);
  *a = s < t ? bet[t] * decay * dkk : 0.0f;
  *qk = decay * dqk;
}

}  // namespace jetserve::kernels::cuda

#endif  // JETSERVE_KERNELS_CUDA_DELTA_RULE_CUH_
