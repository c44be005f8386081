#include "kernels/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/thread_pool.h"

namespace jetserve::kernels::cpu {
namespace {

// scores[g * stride] = (q_g · k) * scale for the `group` query heads q_g (consecutive, head_dim
// apart). Several heads at once give independent FMA chains; the order of each sum is fixed
// (8 lanes in increasing i, then a fixed tree), so a score does not depend on the batch.
__attribute__((target("avx2,fma"))) void GroupScoresAvx2(const float* q, int64_t group,
                                                         const float* k, int64_t head_dim,
                                                         float scale, float* scores,
                                                         int64_t stride) {
  for (int64_t g0 = 0; g0 < group; g0 += 4) {
    const int64_t ng = std::min<int64_t>(4, group - g0);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    for (int64_t i = 0; i < head_dim; i += 8) {
      const __m256 kv = _mm256_loadu_ps(k + i);
      for (int64_t g = 0; g < ng; ++g) {
        acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (g0 + g) * head_dim + i), kv, acc[g]);
      }
    }
    for (int64_t g = 0; g < ng; ++g) {
      alignas(32) float a[8];
      _mm256_store_ps(a, acc[g]);
      const float s0 = (a[0] + a[4]) + (a[1] + a[5]);
      const float s1 = (a[2] + a[6]) + (a[3] + a[7]);
      scores[(g0 + g) * stride] = (s0 + s1) * scale;
    }
  }
}

// Keys per block of the streaming softmax: the scores of one block for a whole GQA group fit
// in a small fixed scratch, so no buffer grows with the context.
constexpr int64_t kKeyBlock = 128;

// Attention of the `group` query heads that share one kv head (consecutive in q and out, each
// head_dim long) over `n` keys fetched through key_row(j) / value_row(j). Each key and value row
// is read once for the whole group: at long context the KV rows come from DRAM, and reading
// them once per query head would multiply that traffic by the group size.
// Keys go in blocks of kKeyBlock with a running max and sum per head (the "online" softmax), in
// an order fixed by n alone, so a query's result does not depend on the batch or the chunking.
// scores: scratch of at least group * kKeyBlock floats. out: [group, head_dim].
template <typename KeyFn, typename ValueFn>
void AttendGroup(const float* q, int64_t group, int64_t n, int64_t head_dim, KeyFn key_row,
                 ValueFn value_row, float* scores, float* running, float* out) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const bool vector_scores = head_dim % 8 == 0 && ActiveIsa() != Isa::kScalar;
  float* max = running;          // [group]
  float* sum = running + group;  // [group]
  for (int64_t g = 0; g < group; ++g) {
    max[g] = -INFINITY;
    sum[g] = 0.0f;
    std::fill_n(out + g * head_dim, head_dim, 0.0f);
  }
  for (int64_t j0 = 0; j0 < n; j0 += kKeyBlock) {
    const int64_t nb = std::min(kKeyBlock, n - j0);
    for (int64_t j = 0; j < nb; ++j) {
      const float* kr = key_row(j0 + j);
      if (vector_scores) {
        GroupScoresAvx2(q, group, kr, head_dim, scale, scores + j, kKeyBlock);
        continue;
      }
      for (int64_t g = 0; g < group; ++g) {
        scores[g * kKeyBlock + j] = Dot(q + g * head_dim, kr, head_dim) * scale;
      }
    }
    for (int64_t g = 0; g < group; ++g) {
      float* sg = scores + g * kKeyBlock;
      float block_max = max[g];
      for (int64_t j = 0; j < nb; ++j) block_max = std::max(block_max, sg[j]);
      if (block_max > max[g]) {
        // Earlier blocks were weighted against a smaller max: rescale what they added.
        const float rescale = std::exp(max[g] - block_max);  // 0 for the first block
        sum[g] *= rescale;
        for (int64_t d = 0; d < head_dim; ++d) out[g * head_dim + d] *= rescale;
        max[g] = block_max;
      }
      for (int64_t j = 0; j < nb; ++j) {
        sg[j] = std::exp(sg[j] - max[g]);
        sum[g] += sg[j];
      }
    }
    for (int64_t j = 0; j < nb; ++j) {
      const float* vr = value_row(j0 + j);
      for (int64_t g = 0; g < group; ++g) {
        Axpy(scores[g * kKeyBlock + j], vr, out + g * head_dim, head_dim);
      }
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    const float inv = 1.0f / sum[g];
    for (int64_t d = 0; d < head_dim; ++d) out[g * head_dim + d] *= inv;
  }
}

// Per-thread scratch for AttendGroup in static thread storage for GQA groups of up to
// kMaxStaticGroup heads (every released model), so that a thread running attention for the
// first time in some later step does not allocate; larger groups fall back to the heap.
constexpr int64_t kMaxStaticGroup = 16;

struct AttendScratch {
  float scores_static[kMaxStaticGroup * kKeyBlock];
  float running_static[2 * kMaxStaticGroup];
  std::vector<float> scores_heap, running_heap;
  float* scores = nullptr;
  float* running = nullptr;
  void Fit(int64_t group) {
    if (group <= kMaxStaticGroup) {
      scores = scores_static;
      running = running_static;
      return;
    }
    if (static_cast<int64_t>(scores_heap.size()) < group * kKeyBlock) {
      scores_heap.resize(group * kKeyBlock);
    }
    if (static_cast<int64_t>(running_heap.size()) < 2 * group) running_heap.resize(2 * group);
    scores = scores_heap.data();
    running = running_heap.data();
  }
};

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
    thread_local AttendScratch scratch;
    scratch.Fit(group);
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
          [&](int64_t j) { return v_pages + slot_of(s, j) * kv_row + kvh * hd; }, scratch.scores,
          scratch.running, out + (row * shape.q_heads + h0) * hd);
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
    thread_local AttendScratch scratch;
    scratch.Fit(group);
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
              scratch.scores, scratch.running, out + (row * shape.q_heads + h0) * hd);
        }
      }
    }
  });
}

}  // namespace jetserve::kernels::cpu
