// What attention.cu (the generic split-K kernel, the combine, the KV writes) and
// decode_attention.cu (the decode kernel) share: the kernels' parameters and the decode
// kernel's launcher. Not part of the op interface (ops.h).
#ifndef JETSERVE_KERNELS_CUDA_ATTENTION_INTERNAL_CUH_
#define JETSERVE_KERNELS_CUDA_ATTENTION_INTERNAL_CUH_

#include "absl/status/statusor.h"
#include "kernels/cuda/common.cuh"

namespace jetserve::kernels::cuda::attention_internal {

struct Params {
  const float* q;
  const AttnSeqDev* seqs;
  int tiles_per_seq;
  int tile_tokens;
  int q_heads, kv_heads, group, hd;
  int splits;
  // paged
  int page_size;
  const bf16_t* k_pages;
  const bf16_t* v_pages;
  // window
  int window;
  const float* k;  // this step's keys/values [tokens, kv_heads, hd]
  const float* v;
  float scale;
  float* ws;  // [tokens, q_heads, splits, hd + 2]
};

// The most keys one split of the decode kernel takes (their scores stay in shared memory).
inline constexpr int kDecodeChunk = 1024;

// A decode step (every sequence one query token; `p` as for the generic kernel, whose workspace
// layout it shares) on the decode kernel, when that is switched on (SetDecodeAttentionKernel),
// has an instantiation for (group, head_dim) and every split holds at most kDecodeChunk of the
// `max_keys` keys. Returns whether it was launched (false: run the generic kernel) or the
// launch's error. The combine kernel runs after either.
absl::StatusOr<bool> LaunchDecodeAttention(const Params& p, bool window, int64_t num_seqs,
                                           int64_t max_keys, cudaStream_t stream);

}  // namespace jetserve::kernels::cuda::attention_internal

#endif  // JETSERVE_KERNELS_CUDA_ATTENTION_INTERNAL_CUH_
