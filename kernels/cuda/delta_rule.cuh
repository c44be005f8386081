// What the gated delta rule's kernels share across files: device code of the two chunked forms
// (jet_ops.cu's GdrChunkKernel, delta_rule_wy.cu's GdrWyPrepKernel), and the launcher of the
// recurrent form's warp kernel (delta_rule_decode.cu).
#ifndef JETSERVE_KERNELS_CUDA_DELTA_RULE_CUH_
#define JETSERVE_KERNELS_CUDA_DELTA_RULE_CUH_

#include <cuda_runtime.h>

#include "absl/status/statusor.h"
#include "kernels/cuda/ops.h"

namespace jetserve::kernels::cuda {

// GatedDeltaRuleRecurrent on GdrRecurrentWarpKernel when GdrRecurrentForm::kWarps is chosen and
// Dk <= 128 (the shape already checked). Returns whether it was launched (false: run the block
// kernel) or the launch's error.
absl::StatusOr<bool> LaunchGdrRecurrentWarps(const float* q, const float* k, const float* v,
                                             const float* g, const float* beta,
                                             const JetSeqDev* seqs, int64_t num_seqs,
                                             const JetShapeDev& shape, float* out,
                                             cudaStream_t stream);

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
