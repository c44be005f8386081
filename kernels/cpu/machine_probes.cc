#include "kernels/cpu/machine_probes.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "kernels/cpu/cpu_features.h"

namespace jetserve::kernels::cpu {
namespace {

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// 12 independent accumulators: more than FMA latency × FMA ports on current x86 cores, so the
// loop is throughput-bound. The result is returned so the loop cannot be optimised away.
__attribute__((target("avx2,fma"))) float FmaLoopAvx2(int64_t iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}
constexpr double kFlopsPerIterAvx2 = 12 * 8 * 2;

__attribute__((target("avx512f"))) float FmaLoopAvx512(int64_t iterations) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0] + out[15];
}
constexpr double kFlopsPerIterAvx512 = 16 * 16 * 2;

float FmaLoopScalar(int64_t iterations) {
  float acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = 0.001f * i;
  for (int64_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < 8; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  }
  float s = 0;
  for (float v : acc) s += v;
  return s;
}
constexpr double kFlopsPerIterScalar = 8 * 2;

// Sum of p[0, n) read as kStreams concurrent sequential streams, as a GEMV reads several weight
// rows at once: one stream per core leaves bandwidth unused on many machines.
constexpr int kStreams = 8;

__attribute__((target("avx2"))) float SumStreamsAvx2(const float* p, int64_t n) {
  const int64_t len = n / kStreams / 8 * 8;
  __m256 acc[kStreams];
  for (int s = 0; s < kStreams; ++s) acc[s] = _mm256_setzero_ps();
  for (int64_t i = 0; i < len; i += 8) {
#pragma GCC unroll 8
    for (int s = 0; s < kStreams; ++s) {
      acc[s] = _mm256_add_ps(acc[s], _mm256_loadu_ps(p + s * len + i));
    }
  }
  __m256 t = acc[0];
  for (int s = 1; s < kStreams; ++s) t = _mm256_add_ps(t, acc[s]);
  float out[8];
  _mm256_storeu_ps(out, t);
  float sum = out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
  for (int64_t i = kStreams * len; i < n; ++i) sum += p[i];
  return sum;
}

float SumStreamsScalar(const float* p, int64_t n) {
  const int64_t len = n / kStreams;
  float acc[kStreams] = {};
  for (int64_t i = 0; i < len; ++i) {
    for (int s = 0; s < kStreams; ++s) acc[s] += p[s * len + i];
  }
  float sum = 0;
  for (float v : acc) sum += v;
  for (int64_t i = kStreams * len; i < n; ++i) sum += p[i];
  return sum;
}

float SumStreams(const float* p, int64_t n) {
  return DetectedIsa() == Isa::kScalar ? SumStreamsScalar(p, n) : SumStreamsAvx2(p, n);
}

}  // namespace

BandwidthResult MeasureBandwidth(ThreadPool& pool, int64_t array_bytes, int repeats) {
  const int64_t n = std::max<int64_t>(1024, array_bytes / 4);
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]), c(new float[n]);
  // First touch by the thread that will use each range, as STREAM does.
  pool.ParallelFor(n, 4096, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      a[i] = 0.0f;
      b[i] = 1.0f;
      c[i] = 2.0f;
    }
  });
  BandwidthResult r;
  r.array_bytes = n * 4;
  double best_triad = 1e30, best_read = 1e30;
  float sink = 0;
  for (int rep = 0; rep < std::max(1, repeats); ++rep) {
    double t0 = Seconds();
    pool.ParallelFor(n, 4096, [&](int64_t lo, int64_t hi) {
      float* __restrict pa = a.get();
      const float* __restrict pb = b.get();
      const float* __restrict pc = c.get();
      for (int64_t i = lo; i < hi; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    });
    best_triad = std::min(best_triad, Seconds() - t0);
    float partial[256] = {};
    t0 = Seconds();
    pool.ParallelFor(n, 4096, [&](int64_t lo, int64_t hi) {
      partial[(lo * 255) / n] += SumStreams(a.get() + lo, hi - lo);
    });
    best_read = std::min(best_read, Seconds() - t0);
    sink += partial[0];
  }
  r.triad_bytes_per_s = 12.0 * n / best_triad;
  r.read_bytes_per_s = (4.0 * n + (sink == 12345.0f ? 1 : 0)) / best_read;
  return r;
}

FlopsResult MeasurePeakFlops(ThreadPool& pool, int64_t iterations, int repeats) {
  const Isa isa = DetectedIsa();
  FlopsResult r;
  double per_iter = kFlopsPerIterScalar;
  r.isa = "scalar";
#if defined(__x86_64__)
  if (isa == Isa::kAvx512Bf16) {
    per_iter = kFlopsPerIterAvx512;
    r.isa = "avx512";
  } else if (isa == Isa::kAvx2) {
    per_iter = kFlopsPerIterAvx2;
    r.isa = "avx2";
  }
#endif
  double best = 1e30;
  float sink = 0;
  const int threads = pool.num_threads();
  for (int rep = 0; rep < std::max(1, repeats); ++rep) {
    const double t0 = Seconds();
    pool.ParallelFor(threads, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        float v;
        if (isa == Isa::kAvx512Bf16) {
          v = FmaLoopAvx512(iterations);
        } else if (isa == Isa::kAvx2) {
          v = FmaLoopAvx2(iterations);
        } else {
          v = FmaLoopScalar(iterations);
        }
        if (v == 12345.0f) sink += v;  // keeps the result live
      }
    });
    best = std::min(best, Seconds() - t0);
  }
  r.flops_per_s = per_iter * static_cast<double>(iterations) * threads / best + sink * 0;
  return r;
}

}  // namespace jetserve::kernels::cpu
