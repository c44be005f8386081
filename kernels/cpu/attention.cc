#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/thread_pool.h"

namespace jetserve::kernels::cpu {
namespace {

// Attention of the `group` query heads that share one kv head (consecutive in q and out, each
// head_dim long) over `n` keys fetched through key_row(j) / value_row(j). Each key and value row
// is read once for the whole group: at long context the KV rows come from DRAM, and reading
// them once per query head would multiply that traffic by the group size. Each head's scores,
// softmax and weighted sum run in the same order as for a lone head.
// scores: scratch, grown to group * n floats. out: [group, head_dim].
template <typename KeyFn, typename ValueFn>
void AttendGroup(const float* q, int64_t group, int64_t n, int64_t head_dim, KeyFn key_row,
                 ValueFn value_row, std::vector<float>& scores, float* out) {
  if (static_cast<int64_t>(scores.size()) < group * n) scores.resize(group * n);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (int64_t j = 0; j < n; ++j) {
    const float* kr = key_row(j);
    for (int64_t g = 0; g < group; ++g)
      scores[g * n + j] = Dot(q + g * head_dim, kr, head_dim) * scale;
  }
  for (int64_t g = 0; g < group; ++g) {
    float* sg = scores.data() + g * n;
    float max = -INFINITY;
    for (int64_t j = 0; j < n; ++j) max = std::max(max, sg[j]);
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      sg[j] = std::exp(sg[j] - max);
      sum += sg[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) sg[j] *= inv;
    std::fill_n(out + g * head_dim, head_dim, 0.0f);
  }
  for (int64_t j = 0; j < n; ++j) {
    const float* vr = value_row(j);
    for (int64_t g = 0; g < group; ++g) Axpy(scores[g * n + j], vr, out + g * head_dim, head_dim);
  }
}

// The sequence whose rows include `row`, starting the scan at `hint`; -1 when none does.
int64_t FindSeq(const AttentionSeq* seqs, int64_t num_seqs, int64_t row, int64_t hint) {
  for (int64_t n = 0; n < num_seqs; ++n) {
    const int64_t i = (hint + n) % num_seqs;
    if (row >= seqs[i].token_offset && row < seqs[i].token_offset + seqs[i].num_tokens) return i;
  }
  return -1;
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
  // 2. Every (sequence, token, kv head) attends independently. Rows that belong to no
  // sequence are skipped; the owning sequence is found by a scan that resumes where the last
  // row's left off, so there is no per-call table (and no allocation).
  int64_t total_tokens = 0;
  for (int64_t i = 0; i < num_seqs; ++i)
    total_tokens = std::max(total_tokens, seqs[i].token_offset + seqs[i].num_tokens);
  ThreadPool::Default().ParallelFor(total_tokens * shape.kv_heads, 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scores;
    int64_t cursor = 0;
    for (int64_t w = b; w < e; ++w) {
      const int64_t row = w / shape.kv_heads;
      const int64_t kvh = w % shape.kv_heads;
      const int64_t si = FindSeq(seqs, num_seqs, row, cursor);
      if (si < 0) continue;
      cursor = si;
      const AttentionSeq& s = seqs[si];
      const int64_t pos = s.start_position + (row - s.token_offset);
      const int64_t h0 = kvh * group;  // first query head of this kv head's group
      AttendGroup(
          q + (row * shape.q_heads + h0) * hd, group, pos + 1, hd,
          [&](int64_t j) { return k_pages + slot_of(s, j) * kv_row + kvh * hd; },
          [&](int64_t j) { return v_pages + slot_of(s, j) * kv_row + kvh * hd; }, scores,
          out + (row * shape.q_heads + h0) * hd);
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
        for (int64_t kvh = 0; kvh < shape.kv_heads; ++kvh) {
          const int64_t h0 = kvh * group;
          AttendGroup(
              q + (row * shape.q_heads + h0) * hd, group, pos - first + 1, hd,
              [&](int64_t j) { return s.k_ring + ((first + j) % window) * kv_row + kvh * hd; },
              [&](int64_t j) { return s.v_ring + ((first + j) % window) * kv_row + kvh * hd; },
              scores, out + (row * shape.q_heads + h0) * hd);
        }
      }
    }
  });
}

}  // namespace jetserve::kernels::cpu
