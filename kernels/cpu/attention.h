// Causal softmax attention over a sequence's cached keys/values: full attention over paged KV,
// and sliding-window attention over a fixed ring. GQA: query head h reads kv head
// h / (q_heads / kv_heads). Scores scaled by 1/sqrt(head_dim), softmax in fp32.
#ifndef JETSERVE_KERNELS_CPU_ATTENTION_H_
#define JETSERVE_KERNELS_CPU_ATTENTION_H_

#include <cstdint>

namespace jetserve::kernels::cpu {

struct AttentionShape {
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};

// One sequence's slice of a flat token batch, for the attention kernels.
struct AttentionSeq {
  int64_t token_offset = 0;  // first row of this sequence in q/k/v/out
  int64_t num_tokens = 0;
  int64_t start_position = 0;  // absolute position of its first token
  // Paged KV: block_table[i] is the page holding positions [i*page_size, (i+1)*page_size).
  const int32_t* block_table = nullptr;
  // Sliding window: this sequence's ring, [window, kv_heads, head_dim] each.
  float* k_ring = nullptr;
  float* v_ring = nullptr;
};

// Writes each sequence's new k/v rows into its pages, then attends every query token to all
// positions <= its own. q: [tokens, q_heads, head_dim]; k, v: [tokens, kv_heads, head_dim];
// k_pages, v_pages: [num_pages, page_size, kv_heads, head_dim]; out: [tokens, q_heads, head_dim].
void PagedAttention(const float* q, const float* k, const float* v, const AttentionSeq* seqs,
                    int64_t num_seqs, const AttentionShape& shape, int64_t page_size,
                    float* k_pages, float* v_pages, float* out);

// Sliding window of `window` keys including the query's own: position p sees p-window+1 .. p.
// Keys live in each sequence's ring at slot (position % window). Tokens of a chunk are written
// and attended in order, so a chunk longer than the window is handled exactly.
void WindowAttention(const float* q, const float* k, const float* v, const AttentionSeq* seqs,
                     int64_t num_seqs, const AttentionShape& shape, int64_t window, float* out);

}  // namespace jetserve::kernels::cpu

#endif  // JETSERVE_KERNELS_CPU_ATTENTION_H_
