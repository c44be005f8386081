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

// The most keys one split of the decode kernels takes (their scores stay in shared memory).
inline constexpr int kDecodeChunk = 1024;

// A decode step (every sequence one query token; `p` as for the generic kernel, whose workspace
// layout it shares) on a decode kernel, when one is switched on (SetDecodeAttentionKernel),
// has an instantiation for (group, head_dim) and every split holds at most kDecodeChunk of the
// `max_keys` keys. Returns whether it was launched (false: run the generic kernel) or the
// launch's error. The combine kernel runs after either.
absl::StatusOr<bool> LaunchDecodeAttention(const Params& p, bool window, int64_t num_seqs,
                                           int64_t max_keys, cudaStream_t stream);
// The tensor-core decode kernel (decode_attention_tc.cu), on the same terms; called by
// LaunchDecodeAttention when DecodeAttention::kTensorCores is chosen.
absl::StatusOr<bool> LaunchDecodeAttentionTc(const Params& p, bool window, int64_t num_seqs,
                                             cudaStream_t stream);

// The decode kernels' loads, in two steps so that a row's address (its block-table lookup and
// divisions) can be found once for all its pieces.
// The address of key (or value) row `pos` of kv head `kvh` (its element 0): in the pages, or
// (window) in the ring or, for this step's own token, in this step's fp32 rows — marked by bit
// 0 (the rows are at least 16-byte aligned), as they are rounded to bf16 when read, as the ring
// will hold them.
template <bool kWindow>
__device__ __forceinline__ unsigned long long KvRowAddress(const Params& p, const AttnSeqDev& s,
                                                           const bf16_t* pages, const bf16_t* ring,
                                                           const float* fresh, int kvh, int pos) {
  const int hd = p.hd;
  if constexpr (kWindow) {
    if (pos >= s.start_position) {
      const float* row =
          fresh +
          ((static_cast<int64_t>(s.token_offset) + pos - s.start_position) * p.kv_heads + kvh) * hd;
      return reinterpret_cast<unsigned long long>(row) | 1ull;
    }
    return reinterpret_cast<unsigned long long>(
        ring + (static_cast<int64_t>(pos % p.window) * p.kv_heads + kvh) * hd);
  } else {
    const int64_t page = s.block_table[pos / p.page_size];
    return reinterpret_cast<unsigned long long>(
        pages + ((page * p.page_size + pos % p.page_size) * p.kv_heads + kvh) * hd);
  }
}
// Elements dim .. dim+7 (dim a multiple of 8) of a row from KvRowAddress, as packed bf16.
template <bool kWindow>
__device__ __forceinline__ uint4 LoadKvRow16(unsigned long long row, int dim) {
  if constexpr (kWindow) {
    if (row & 1ull) {
      const float* src = reinterpret_cast<const float*>(row & ~1ull) + dim;
      const float4 a = *reinterpret_cast<const float4*>(src);
      const float4 b = *reinterpret_cast<const float4*>(src + 4);
      return make_uint4(PackBf16x2(a.x, a.y), PackBf16x2(a.z, a.w), PackBf16x2(b.x, b.y),
                        PackBf16x2(b.z, b.w));
    }
  }
  return __ldg(reinterpret_cast<const uint4*>(reinterpret_cast<const bf16_t*>(row) + dim));
}
// The keys [k0, k0 + n) one block of a decode kernel takes: split `split` of the query's
// context (kWindow: of its window), n at most kDecodeChunk (the launchers run the kernels only
// then; the min keeps a caller's wrong max_context from writing past the score buffers).
struct DecodeSplit {
  int k0, n;
};
template <bool kWindow>
__device__ __forceinline__ DecodeSplit DecodeSplitOf(const Params& p, const AttnSeqDev& s,
                                                     int split) {
  const int qpos = s.start_position;
  const int kbeg = kWindow ? max(0, qpos - p.window + 1) : 0;
  const int kend = qpos + 1;
  const int per = (kend - kbeg + p.splits - 1) / p.splits;
  const int k0 = kbeg + split * per;
  return {k0, min(max(0, min(kend, k0 + per) - k0), kDecodeChunk)};
}

// The decode kernels' block reductions over their G heads (blocks of kWarps warps; every thread
// gets the results; red: [kWarps][G] shared floats). Both synchronise the block.
// The max of scores[h * stride + i] over i < n (-inf when n is 0).
template <int G, int kWarps>
__device__ __forceinline__ void BlockHeadMax(const float* scores, int stride, int n,
                                             float (*red)[G], float (&m)[G]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int h = 0; h < G; ++h) {
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < n; i += kWarps * 32) mx = fmaxf(mx, scores[h * stride + i]);
    mx = WarpMax(mx);
    if (lane == 0) red[warp][h] = mx;
  }
  __syncthreads();
#pragma unroll
  for (int h = 0; h < G; ++h) {
    m[h] = red[0][h];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) m[h] = fmaxf(m[h], red[w][h]);
  }
  __syncthreads();  // red may be rewritten next
}
// The sum over the block's threads of each thread's `part` (per head).
template <int G, int kWarps>
__device__ __forceinline__ void BlockHeadSum(const float (&part)[G], float (*red)[G],
                                             float (&sum)[G]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int h = 0; h < G; ++h) {
    const float s = WarpSum(part[h]);
    if (lane == 0) red[warp][h] = s;
  }
  __syncthreads();
#pragma unroll
  for (int h = 0; h < G; ++h) {
    sum[h] = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum[h] += red[w][h];
  }
  __syncthreads();
}

// A decode block's partial result for its G heads into the workspace entry the combine kernel
// reads, ((token * q_heads + kvh * G + h) * splits + split) * (HD + 2): the kWarps warps' rows
// part[(w * part_rows + h) * HD + d] summed, then m (-inf for an empty split) and l.
template <int G, int HD, int kWarps>
__device__ __forceinline__ void WriteDecodePartial(const Params& p, const float* part,
                                                   int part_rows, int64_t token, int kvh, int split,
                                                   int n, const float (&m)[G],
                                                   const float (&l)[G]) {
#pragma unroll
  for (int h = 0; h < G; ++h) {
    float* w = p.ws + ((token * p.q_heads + static_cast<int64_t>(kvh) * G + h) * p.splits + split) *
                          (HD + 2);
    for (int d = threadIdx.x; d < HD; d += kWarps * 32) {
      float o = 0.0f;
#pragma unroll
      for (int wi = 0; wi < kWarps; ++wi) o += part[(wi * part_rows + h) * HD + d];
      w[d] = o;
    }
    if (threadIdx.x == 0) {
      w[HD] = n > 0 ? m[h] : -INFINITY;
      w[HD + 1] = l[h];
    }
  }
}

}  // namespace jetserve::kernels::cuda::attention_internal

#endif  // JETSERVE_KERNELS_CUDA_ATTENTION_INTERNAL_CUH_
