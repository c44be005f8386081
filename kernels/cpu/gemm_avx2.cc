// The AVX2/FMA body of Linear. Compiled for any x86-64 (functions carry their own target
// attribute) and only called when the CPU has AVX2, FMA and F16C.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "kernels/cpu/gemm.h"

#define JETSERVE_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace jetserve::kernels::cpu::internal {
namespace {

// Tokens per register tile (3 tokens × 4 rows = 12 accumulators + 3 x + 1 w = 16 ymm); a
// single token uses 8 rows, so that 8 independent FMA chains hide the FMA latency.
constexpr int kMr = 3;
constexpr int kNrWide = 4;
constexpr int kNrSingle = 8;
// Tokens whose partial sums are kept at once (a multiple of kMr), and rows per work item.
constexpr int64_t kMc = 48;
constexpr int64_t kNcMax = 64;
// K block for batched calls: a block of x (kMc × kKc fp32 = 192 KiB) stays in L2 while the
// item's rows pass over it. Single tokens use the whole row so that weights stream linearly.
constexpr int64_t kKc = 1024;
// How far ahead of the weights being read a tile prefetches: a tile of adjacent rows as one
// stream (kTileBytes), or each of a Gemv tile's distant rows (kEachRow).
constexpr int64_t kPrefetchBytes = 4096;
constexpr int64_t kRowPrefetchBytes = 1024;

enum class Prefetch { kNone, kTileBytes, kEachRow };

struct Bf16Tag {
  using T = uint16_t;
};
struct F16Tag {
  using T = uint16_t;
};
struct F32Tag {
  using T = float;
};

JETSERVE_AVX2 inline __m256 Load8(Bf16Tag, const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
JETSERVE_AVX2 inline __m256 Load8(F16Tag, const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
JETSERVE_AVX2 inline __m256 Load8(F32Tag, const float* p) { return _mm256_loadu_ps(p); }

// The last r < 8 elements, zero-padded: 0 * 0 adds nothing to a lane.
template <typename Tag>
JETSERVE_AVX2 inline __m256 LoadTail(Tag tag, const typename Tag::T* p, int r) {
  alignas(32) typename Tag::T buf[8] = {};
  std::memcpy(buf, p, r * sizeof(typename Tag::T));
  return Load8(tag, buf);
}

JETSERVE_AVX2 inline __m256 LoadTailX(const float* p, int r) {
  alignas(32) static const int32_t kMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                0,  0,  0,  0,  0,  0,  0,  0};
  const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMask + 8 - r));
  return _mm256_maskload_ps(p, mask);
}

// acc[m][n] (8 lanes each, at acc + m*acc_ld + n*8) += x[m, 0:klen] ⊙ w[n, 0:klen], lane j
// taking elements ≡ j (mod 8) in increasing k. `init` starts from zero instead of acc.
template <typename Tag, int MR, int NR>
JETSERVE_AVX2 void Tile(const float* x, int64_t ldx, const typename Tag::T* w, int64_t ldw,
                        int64_t klen, float* acc, int64_t acc_ld, bool init, Prefetch prefetch) {
  __m256 c[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) {
      c[m][n] = init ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + m * acc_ld + n * 8);
    }
  }
  const int64_t k8 = klen & ~int64_t{7};
  // kTileBytes: the first token tile over whole rows streams them from DRAM: the NR rows of a
  // tile are adjacent in memory (klen == ldw), so prefetch the tile's bytes as one linear
  // stream running ahead of the NR interleaved row streams, which are each too short for the
  // hardware prefetcher to ramp up on. Beyond the tile's end it runs into the next tile's rows.
  // kEachRow: rows far apart (Gemv), each a long stream of its own: one line per row, a fixed
  // distance ahead of where that row is read.
  const char* pf = reinterpret_cast<const char*>(w) + kPrefetchBytes;
  constexpr int64_t kLineElems = 64 / sizeof(typename Tag::T);
  for (int64_t k = 0; k < k8; k += 8) {
    if (prefetch == Prefetch::kTileBytes) {
      // NR rows × 8 elements consumed per step.
      constexpr int64_t kStep = NR * 8 * sizeof(typename Tag::T);
      for (int64_t b = 0; b < kStep; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
      pf += kStep;
    } else if (prefetch == Prefetch::kEachRow && k % kLineElems == 0) {
#pragma GCC unroll 8
      for (int n = 0; n < NR; ++n) {
        _mm_prefetch(reinterpret_cast<const char*>(w + n * ldw + k) + kRowPrefetchBytes,
                     _MM_HINT_T0);
      }
    }
    __m256 xv[MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) xv[m] = _mm256_loadu_ps(x + m * ldx + k);
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) {
      const __m256 wv = Load8(Tag{}, w + n * ldw + k);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) c[m][n] = _mm256_fmadd_ps(xv[m], wv, c[m][n]);
    }
  }
  if (const int r = static_cast<int>(klen - k8); r > 0) {
    __m256 xv[MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) xv[m] = LoadTailX(x + m * ldx + k8, r);
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) {
      const __m256 wv = LoadTail(Tag{}, w + n * ldw + k8, r);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) c[m][n] = _mm256_fmadd_ps(xv[m], wv, c[m][n]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) _mm256_storeu_ps(acc + m * acc_ld + n * 8, c[m][n]);
  }
}

template <typename Tag>
using TileFn = void (*)(const float*, int64_t, const typename Tag::T*, int64_t, int64_t, float*,
                        int64_t, bool, Prefetch);

// kTiles[mr - 1][nr - 1]; mr > 1 uses nr <= kNrWide only.
template <typename Tag>
struct TileTable {
  TileFn<Tag> fn[kMr][kNrSingle] = {
      {Tile<Tag, 1, 1>, Tile<Tag, 1, 2>, Tile<Tag, 1, 3>, Tile<Tag, 1, 4>, Tile<Tag, 1, 5>,
       Tile<Tag, 1, 6>, Tile<Tag, 1, 7>, Tile<Tag, 1, 8>},
      {Tile<Tag, 2, 1>, Tile<Tag, 2, 2>, Tile<Tag, 2, 3>, Tile<Tag, 2, 4>, nullptr, nullptr,
       nullptr, nullptr},
      {Tile<Tag, 3, 1>, Tile<Tag, 3, 2>, Tile<Tag, 3, 3>, Tile<Tag, 3, 4>, nullptr, nullptr,
       nullptr, nullptr},
  };
};

// The fixed combination of the 8 lanes, shared with the scalar path's order.
inline float Combine8(const float* a) {
  const float s0 = (a[0] + a[4]) + (a[1] + a[5]);
  const float s1 = (a[2] + a[6]) + (a[3] + a[7]);
  return s0 + s1;
}

// Up to kMr tokens (decode at small batch): y[t, n] = x[t] · w[n] + bias[n]. This is bound by
// how fast the weights stream from DRAM, and a core streams fastest along several long
// sequential runs at once (the hardware prefetchers follow each; one run, or a tile's adjacent
// rows of 1–3 KB that end before the prefetchers ramp up, leave bandwidth unused: measured
// 21–23 GB/s against 26–34 with 8 long runs, two Zen 3 cores). So a row block of R·L rows (R
// the tile's rows: 8 for one token, 4 for two or three) is read as R runs of L consecutive
// rows, the tile's rows taken L apart: tile i computes rows b + i, b + i + L, ..., b + i +
// (R-1)L. Each (token, row) is still one Tile over the whole K from zero, so its sum is bitwise
// what the batched path computes for the same token.
template <typename Tag>
void Gemv(ThreadPool& pool, const TileTable<Tag>& table, const float* x, int64_t M,
          const typename Tag::T* w, int64_t N, int64_t K, const float* bias, float* y) {
  const int mr = static_cast<int>(M);
  const int64_t R = mr == 1 ? kNrSingle : kNrWide;
  // About 4 row blocks per thread, handed out dynamically (a core may be shared).
  const int64_t threads = pool.num_threads();
  int64_t block = (N + 4 * threads - 1) / (4 * threads);
  block = std::max<int64_t>(R, (block + R - 1) / R * R);
  const int64_t blocks = (N + block - 1) / block;
  constexpr int64_t kAccLd = kNrSingle * 8;  // one token's [rows][8 lanes]
  std::atomic<int64_t> next{0};
  pool.RunOnAll(blocks, kMr * kAccLd, [&](int64_t, int64_t, float* acc) {
    // acc: [tokens][rows of the tile][8]. Writes rows[0, nr) of every token.
    auto store = [&](int nr, auto row_of) {
      for (int t = 0; t < mr; ++t) {
        for (int j = 0; j < nr; ++j) {
          const int64_t n = row_of(j);
          y[t * N + n] = Combine8(acc + t * kAccLd + j * 8) + (bias != nullptr ? bias[n] : 0.0f);
        }
      }
    };
    for (int64_t item = next.fetch_add(1); item < blocks; item = next.fetch_add(1)) {
      const int64_t b = item * block;
      const int64_t count = std::min(N, b + block) - b;
      const int64_t run = count / R;  // L
      for (int64_t i = 0; i < run; ++i) {
        table.fn[mr - 1][R - 1](x, K, w + (b + i) * K, run * K, K, acc, kAccLd, /*init=*/true,
                                Prefetch::kEachRow);
        store(static_cast<int>(R), [&](int j) { return b + i + j * run; });
      }
      // The last count mod R rows, adjacent.
      const int64_t rest = b + run * R;
      if (const int nr = static_cast<int>(b + count - rest); nr > 0) {
        table.fn[mr - 1][nr - 1](x, K, w + rest * K, K, K, acc, kAccLd, /*init=*/true,
                                 Prefetch::kNone);
        store(nr, [&](int j) { return rest + j; });
      }
    }
  });
}

template <typename Tag>
void Gemm(ThreadPool& pool, const float* x, int64_t tokens, const typename Tag::T* w, int64_t rows,
          int64_t cols, const float* bias, float* y) {
  static const TileTable<Tag> table;
  const int64_t M = tokens, N = rows, K = cols;
  if (M <= kMr && K > 0) {
    Gemv<Tag>(pool, table, x, M, w, N, K, bias, y);
    return;
  }
  // Enough row blocks to keep every thread busy, each a multiple of 8 rows when possible.
  const int64_t threads = pool.num_threads();
  int64_t nc = (N + 4 * threads - 1) / (4 * threads);
  nc = std::clamp<int64_t>((nc + 7) / 8 * 8, 8, kNcMax);
  const int64_t items = (N + nc - 1) / nc;
  // Up to one token block, whole rows at a time: the weights stream from memory once, linearly
  // (prefetched), while the block's x stays in L2. Larger batches block K so that x does too.
  const int64_t kc = M <= kMc ? std::max<int64_t>(K, 1) : kKc;
  std::atomic<int64_t> next{0};
  // Per-shard partial sums for one (token block, row block): [kMc][kNcMax][lanes], indexed by
  // the row's slot in the block. Whole rows (one K block) are read as in Gemv: the block's
  // rows as kNrWide runs of `run` consecutive rows, a tile's rows taken `run` apart, so the
  // first token tile streams them from DRAM along kNrWide long runs; slot i·kNrWide + j holds
  // row n0 + i + j·run, and the rows past kNrWide·run keep slots in order.
  pool.RunOnAll(items, kMc * kNcMax * 8, [&](int64_t, int64_t, float* acc) {
    const int64_t acc_ld = kNcMax * 8;
    for (int64_t item = next.fetch_add(1); item < items; item = next.fetch_add(1)) {
      const int64_t n0 = item * nc;
      const int64_t n1 = std::min(N, n0 + nc);
      const int64_t run = M <= kMc && K > 0 ? (n1 - n0) / kNrWide : 0;
      const int64_t rest0 = n0 + run * kNrWide;  // first row (and slot) past the runs
      auto row_of_slot = [&](int64_t s) {
        return s < run * kNrWide ? n0 + s / kNrWide + (s % kNrWide) * run : n0 + s;
      };
      for (int64_t m0 = 0; m0 < M; m0 += kMc) {
        const int64_t m1 = std::min(M, m0 + kMc);
        for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kc) {
          const int64_t klen = std::min(kc, K - k0);
          const bool init = k0 == 0;
          for (int64_t t = m0; t < m1; t += kMr) {
            const int mr = static_cast<int>(std::min<int64_t>(kMr, m1 - t));
            float* acc_t = acc + (t - m0) * acc_ld;
            for (int64_t i = 0; i < run; ++i) {
              table.fn[mr - 1][kNrWide - 1](x + t * K, K, w + (n0 + i) * K, run * K, K,
                                            acc_t + i * kNrWide * 8, acc_ld, init,
                                            t == m0 ? Prefetch::kEachRow : Prefetch::kNone);
            }
            const int step = mr == 1 ? kNrSingle : kNrWide;
            for (int64_t n = rest0; n < n1; n += step) {
              const int nr = static_cast<int>(std::min<int64_t>(step, n1 - n));
              table.fn[mr - 1][nr - 1](
                  x + t * K + k0, K, w + n * K + k0, K, klen, acc_t + (n - n0) * 8, acc_ld, init,
                  t == m0 && klen == K ? Prefetch::kTileBytes : Prefetch::kNone);
            }
          }
          if (K == 0) break;
        }
        for (int64_t t = m0; t < m1; ++t) {
          const float* acc_t = acc + (t - m0) * acc_ld;
          for (int64_t s = 0; s < n1 - n0; ++s) {
            const int64_t n = row_of_slot(s);
            y[t * N + n] = Combine8(acc_t + s * 8) + (bias != nullptr ? bias[n] : 0.0f);
          }
        }
      }
    }
  });
}

}  // namespace

void GemmAvx2(ThreadPool& pool, const float* x, int64_t tokens, const WeightMatrix& w,
              const float* bias, float* y) {
  switch (w.dtype) {
    case DType::kBF16:
      Gemm<Bf16Tag>(pool, x, tokens, static_cast<const uint16_t*>(w.data), w.rows, w.cols, bias, y);
      return;
    case DType::kF16:
      Gemm<F16Tag>(pool, x, tokens, static_cast<const uint16_t*>(w.data), w.rows, w.cols, bias, y);
      return;
    case DType::kF32:
      Gemm<F32Tag>(pool, x, tokens, static_cast<const float*>(w.data), w.rows, w.cols, bias, y);
      return;
  }
}

}  // namespace jetserve::kernels::cpu::internal
