#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/linear.h"
#include "kernels/cpu/thread_pool.h"

namespace jetserve::kernels::cpu {
namespace {

// Attention of one query head over `n` keys fetched through key_row(j) / value_row(j).
// scores: scratch of n floats. out: [head_dim].
template <typename KeyFn, typename ValueFn>
void AttendOne(const float* q, int64_t n, int64_t head_dim, KeyFn key_row, ValueFn value_row,
               std::vector<float>& scores, float* out) {
  scores.resize(n);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  float max = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = Dot(q, key_row(j), head_dim) * scale;
    max = std::max(max, scores[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - max);
    sum += scores[j];
  }
  const float inv = 1.0f / sum;
  std::fill_n(out, head_dim, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float p = scores[j] * inv;
    const float* vr = value_row(j);
    for (int64_t d = 0; d < head_dim; ++d) out[d] += p * vr[d];
  }
}

}  // namespace

void PagedAttention(const float* q, const float* k, const float* v, const AttentionSeq* seqs,
                    int64_t num_seqs, const AttentionShape& shape, int64_t page_size,
                    float* k_pages, float* v_pages, float* out) {
  const int64_t hd = shape.head_dim;
  const int64_t kv_row = shape.kv_heads * hd;  // floats per cached position
  const int64_t group = shape.q_heads / shape.kv_heads;
  auto slot_of = [&](const AttentionSeq& s, int64_t pos) {
    return static_cast<int64_t>(s.block_table[pos / page_size]) * page_size + pos % page_size;
  };
  // 1. Append the new keys/values to the pages.
  for (int64_t i = 0; i < num_seqs; ++i) {
    const AttentionSeq& s = seqs[i];
    for (int64_t t = 0; t < s.num_tokens; ++t) {
      const int64_t slot = slot_of(s, s.start_position + t);
      std::memcpy(k_pages + slot * kv_row, k + (s.token_offset + t) * kv_row, kv_row * 4);
      std::memcpy(v_pages + slot * kv_row, v + (s.token_offset + t) * kv_row, kv_row * 4);
    }
  }
  // 2. Every (sequence, token, query head) attends independently.
  int64_t total_tokens = 0;
  for (int64_t i = 0; i < num_seqs; ++i)
    total_tokens = std::max(total_tokens, seqs[i].token_offset + seqs[i].num_tokens);
  std::vector<int64_t> seq_of_token(total_tokens, -1);
  for (int64_t i = 0; i < num_seqs; ++i) {
    for (int64_t t = 0; t < seqs[i].num_tokens; ++t) seq_of_token[seqs[i].token_offset + t] = i;
  }
  ThreadPool::Default().ParallelFor(total_tokens * shape.q_heads, 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scores;
    for (int64_t w = b; w < e; ++w) {
      const int64_t row = w / shape.q_heads;
      const int64_t h = w % shape.q_heads;
      if (seq_of_token[row] < 0) continue;
      const AttentionSeq& s = seqs[seq_of_token[row]];
      const int64_t pos = s.start_position + (row - s.token_offset);
      const int64_t kvh = h / group;
      AttendOne(
          q + (row * shape.q_heads + h) * hd, pos + 1, hd,
          [&](int64_t j) { return k_pages + slot_of(s, j) * kv_row + kvh * hd; },
          [&](int64_t j) { return v_pages + slot_of(s, j) * kv_row + kvh * hd; }, scores,
          out + (row * shape.q_heads + h) * hd);
    }
  });
}

void WindowAttention(const float* q, const float* k, const float* v, const AttentionSeq* seqs,
                     int64_t num_seqs, const AttentionShape& shape, int64_t window, float* out) {
  const int64_t hd = shape.head_dim;
  const int64_t kv_row = shape.kv_heads * hd;
  const int64_t group = shape.q_heads / shape.kv_heads;
  // Sequences are independent; within one, tokens go in order because each write may evict the
  // key that an earlier query of the same chunk still needed.
  ThreadPool::Default().ParallelFor(num_seqs, 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scores;
    for (int64_t i = b; i < e; ++i) {
      const AttentionSeq& s = seqs[i];
      for (int64_t t = 0; t < s.num_tokens; ++t) {
        const int64_t row = s.token_offset + t;
        const int64_t pos = s.start_position + t;
        const int64_t slot = pos % window;
        std::memcpy(s.k_ring + slot * kv_row, k + row * kv_row, kv_row * 4);
        std::memcpy(s.v_ring + slot * kv_row, v + row * kv_row, kv_row * 4);
        const int64_t first = std::max<int64_t>(0, pos - window + 1);
        for (int64_t h = 0; h < shape.q_heads; ++h) {
          const int64_t kvh = h / group;
          AttendOne(
              q + (row * shape.q_heads + h) * hd, pos - first + 1, hd,
              [&](int64_t j) { return s.k_ring + ((first + j) % window) * kv_row + kvh * hd; },
              [&](int64_t j) { return s.v_ring + ((first + j) % window) * kv_row + kvh * hd; },
              scores, out + (row * shape.q_heads + h) * hd);
        }
      }
    }
  });
}

}  // namespace jetserve::kernels::cpu
