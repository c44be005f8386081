// The AVX-512 BF16 body of Linear: bf16 weights times activations split into bf16 hi + lo,
// with vdpbf16ps. Compiled for any x86-64 (functions carry their own target attribute) and only
// called when the CPU has AVX-512F/BW/VL and AVX512_BF16.
//
// Why hi + lo: vdpbf16ps multiplies bf16 by bf16. Rounding the fp32 activations to one bf16
// would cost ~3 significant digits per product; x = hi + lo (each bf16) keeps ~16 bits and both
// products are exact in fp32, so this path agrees with the fp32 paths to about fp32 rounding at
// the price of two dot instructions per 32 weights (still no widening of the weights).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <new>
#include <vector>

#include "kernels/cpu/gemm.h"

#define JETSERVE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

namespace jetserve::kernels::cpu::internal {
namespace {

constexpr int kMr = 4;  // 4 tokens × 4 rows: 16 accumulators + 8 x registers + 1 w of 32 zmm
constexpr int kNrWide = 4;
constexpr int kNrSingle = 8;
constexpr int64_t kMc = 48;
constexpr int64_t kNcMax = 64;
constexpr int64_t kKc = 1024;  // a multiple of 32

// acc[m][n] (16 lanes at acc + m*acc_ld + n*16) += Σ over 32-element steps of
// dpbf16(x_hi, w) then dpbf16(x_lo, w). x rows are zero-padded to a multiple of 32; the weight
// tail is read with a mask, so padding adds exact zeros.
template <int MR, int NR>
JETSERVE_AVX512 void Tile(const uint16_t* xh, const uint16_t* xl, int64_t ldx, const uint16_t* w,
                          int64_t ldw, int64_t klen, float* acc, int64_t acc_ld, bool init) {
  __m512 c[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) {
      c[m][n] = init ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + m * acc_ld + n * 16);
    }
  }
  for (int64_t k = 0; k < klen; k += 32) {
    const int64_t r = std::min<int64_t>(32, klen - k);
    const __mmask32 mask = r == 32 ? ~__mmask32{0} : ((__mmask32{1} << r) - 1);
    __m512bh hi[MR], lo[MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      hi[m] = (__m512bh)_mm512_loadu_si512(xh + m * ldx + k);
      lo[m] = (__m512bh)_mm512_loadu_si512(xl + m * ldx + k);
    }
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + n * ldw + k);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        c[m][n] = _mm512_dpbf16_ps(c[m][n], hi[m], wv);
        c[m][n] = _mm512_dpbf16_ps(c[m][n], lo[m], wv);
      }
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int n = 0; n < NR; ++n) _mm512_storeu_ps(acc + m * acc_ld + n * 16, c[m][n]);
  }
}

using TileFn = void (*)(const uint16_t*, const uint16_t*, int64_t, const uint16_t*, int64_t,
                        int64_t, float*, int64_t, bool);

constexpr TileFn kTiles[kMr][kNrSingle] = {
    {Tile<1, 1>, Tile<1, 2>, Tile<1, 3>, Tile<1, 4>, Tile<1, 5>, Tile<1, 6>, Tile<1, 7>,
     Tile<1, 8>},
    {Tile<2, 1>, Tile<2, 2>, Tile<2, 3>, Tile<2, 4>, nullptr, nullptr, nullptr, nullptr},
    {Tile<3, 1>, Tile<3, 2>, Tile<3, 3>, Tile<3, 4>, nullptr, nullptr, nullptr, nullptr},
    {Tile<4, 1>, Tile<4, 2>, Tile<4, 3>, Tile<4, 4>, nullptr, nullptr, nullptr, nullptr},
};

// The 16 lanes folded to 8, then the same tree as the 8-lane paths.
inline float Combine16(const float* a) {
  float b[8];
  for (int i = 0; i < 8; ++i) b[i] = a[i] + a[i + 8];
  const float s0 = (b[0] + b[4]) + (b[1] + b[5]);
  const float s1 = (b[2] + b[6]) + (b[3] + b[7]);
  return s0 + s1;
}

}  // namespace

void GemmAvx512Bf16(ThreadPool& pool, const float* x, int64_t tokens, const WeightMatrix& w,
                    const float* bias, float* y) {
  if (w.dtype != DType::kBF16) {
    GemmAvx2(pool, x, tokens, w, bias, y);
    return;
  }
  const int64_t M = tokens, N = w.rows, K = w.cols;
  const int64_t kp = (K + 31) / 32 * 32;
  // The caller's split of x, grown on demand and reused.
  thread_local std::vector<uint16_t> split;
  if (static_cast<int64_t>(split.size()) < 2 * M * kp) split.resize(2 * M * kp);
  uint16_t* xh = split.data();
  uint16_t* xl = split.data() + M * kp;
  for (int64_t t = 0; t < M; ++t) {
    for (int64_t k = 0; k < kp; ++k) {
      const float v = k < K ? x[t * K + k] : 0.0f;
      const uint16_t h = FloatToBf16(v);
      xh[t * kp + k] = h;
      xl[t * kp + k] = FloatToBf16(v - Bf16ToFloat(h));
    }
  }
  const uint16_t* wp = static_cast<const uint16_t*>(w.data);
  const int64_t threads = pool.num_threads();
  int64_t nc = (N + 4 * threads - 1) / (4 * threads);
  nc = std::clamp<int64_t>((nc + 7) / 8 * 8, 8, kNcMax);
  const int64_t items = (N + nc - 1) / nc;
  const int64_t kc = M <= 2 ? std::max<int64_t>(kp, 32) : kKc;
  std::atomic<int64_t> next{0};
  // Per-shard partial sums for one (token block, row block): [kMc][kNcMax][lanes].
  pool.RunOnAll(items, kMc * kNcMax * 16, [&](int64_t, int64_t, float* acc) {
    const int64_t acc_ld = kNcMax * 16;
    for (int64_t item = next.fetch_add(1); item < items; item = next.fetch_add(1)) {
      const int64_t n0 = item * nc;
      const int64_t n1 = std::min(N, n0 + nc);
      for (int64_t m0 = 0; m0 < M; m0 += kMc) {
        const int64_t m1 = std::min(M, m0 + kMc);
        for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += kc) {
          const int64_t klen = std::max<int64_t>(0, std::min(kc, K - k0));
          for (int64_t t = m0; t < m1; t += kMr) {
            const int mr = static_cast<int>(std::min<int64_t>(kMr, m1 - t));
            const int step = mr == 1 ? kNrSingle : kNrWide;
            float* acc_t = acc + (t - m0) * acc_ld;
            for (int64_t n = n0; n < n1; n += step) {
              const int nr = static_cast<int>(std::min<int64_t>(step, n1 - n));
              kTiles[mr - 1][nr - 1](xh + t * kp + k0, xl + t * kp + k0, kp, wp + n * K + k0, K,
                                     klen, acc_t + (n - n0) * 16, acc_ld, k0 == 0);
            }
          }
          if (K == 0) break;
        }
        for (int64_t t = m0; t < m1; ++t) {
          const float* acc_t = acc + (t - m0) * acc_ld;
          for (int64_t n = n0; n < n1; ++n) {
            y[t * N + n] = Combine16(acc_t + (n - n0) * 16) + (bias != nullptr ? bias[n] : 0.0f);
          }
        }
      }
    }
  });
}

}  // namespace jetserve::kernels::cpu::internal
