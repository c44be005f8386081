// See sampling.h. One block of kThreads per row; every step is a block-wide pass over the row.
#include <curand_kernel.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sampling.h"

namespace jetserve::kernels::cuda {
namespace {

constexpr int kThreads = 1024;

struct ValIdx {
  float v;
  int32_t i;
};

// Larger value wins; ties go to the lower id.
__device__ __forceinline__ ValIdx Better(ValIdx a, ValIdx b) {
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

__device__ ValIdx BlockArgmax(ValIdx x, float* sv, int32_t* si) {
  for (int o = 16; o > 0; o >>= 1) {
    ValIdx y{__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.i, o)};
    x = Better(x, y);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    sv[warp] = x.v;
    si[warp] = x.i;
  }
  __syncthreads();
  ValIdx r{-INFINITY, INT32_MAX};
  if (lane < (blockDim.x >> 5)) r = ValIdx{sv[lane], si[lane]};
  for (int o = 16; o > 0; o >>= 1) {
    ValIdx y{__shfl_xor_sync(0xffffffffu, r.v, o), __shfl_xor_sync(0xffffffffu, r.i, o)};
    r = Better(r, y);
  }
  return r;
}

// Block sum in double (masses over a 150K vocabulary).
__device__ double BlockSumD(double v, double* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double r = lane < (blockDim.x >> 5) ? scratch[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}

// Mass (or count) of weights >= threshold.
__device__ double MassAtLeast(const float* w, int vocab, float threshold, bool count,
                              double* scratch) {
  double s = 0.0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (w[i] >= threshold) s += count ? 1.0 : static_cast<double>(w[i]);
  }
  return BlockSumD(s, scratch);
}

// The largest threshold τ in [0, 1] (bisection on the float's bits, monotone for non-negative
// floats) with MassAtLeast(τ) >= target. Weights are in [0, 1] (the max has weight 1).
__device__ float LargestThreshold(const float* w, int vocab, double target, bool count,
                                  double* scratch) {
  uint32_t lo = 0, hi = __float_as_uint(1.0f);  // invariant: mass(lo) >= target
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo + 1) / 2;
    if (MassAtLeast(w, vocab, __uint_as_float(mid), count, scratch) >= target) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return __uint_as_float(lo);
}

__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* __restrict__ logits, int vocab,
                 const SamplingRowDev* __restrict__ params, float* __restrict__ scratch,
                 SampleResultDev* __restrict__ results) {
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  __shared__ double sd[32];
  __shared__ double prefix[kThreads];
  const int64_t row = blockIdx.x;
  const SamplingRowDev p = params[row];
  const float* raw =
      logits + (p.logits_row >= 0 ? p.logits_row : row) * static_cast<int64_t>(vocab);
  float* x = scratch + row * vocab;
  SampleResultDev* res = results + row;

  // 1-3: logit_bias, repetition, presence/frequency, bans, on a copy — made only when a row has
  // any (a greedy row without them reads its logits once: at batch 773 a step's rows are 470 MB).
  const bool edits = p.n_bias > 0 || (p.repetition_penalty != 1.0f && p.n_rep > 0) ||
                     ((p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) && p.n_out > 0) ||
                     p.n_banned > 0;
  if (edits) {
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) x[i] = raw[i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < p.n_bias; i += blockDim.x) {
    atomicAdd(&x[p.bias_ids[i]], p.bias_values[i]);  // repeated ids add up, as on the CPU
  }
  __syncthreads();
  if (p.repetition_penalty != 1.0f) {
    for (int i = threadIdx.x; i < p.n_rep; i += blockDim.x) {
      const int32_t id = p.rep_ids[i];
      const float v = x[id];
      x[id] = v > 0.0f ? v / p.repetition_penalty : v * p.repetition_penalty;
    }
  }
  __syncthreads();
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    for (int i = threadIdx.x; i < p.n_out; i += blockDim.x) {
      x[p.out_ids[i]] -= p.presence_penalty + p.frequency_penalty * p.out_counts[i];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < p.n_banned; i += blockDim.x) x[p.banned[i]] = -INFINITY;
  __syncthreads();

  // 4: greedy, or the filtered softmax draw.
  const float* edited = edits ? x : raw;
  ValIdx best{-INFINITY, INT32_MAX};
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) best = Better(best, ValIdx{edited[i], i});
  best = BlockArgmax(best, sv, si);
  const int32_t argmax = best.i < vocab ? best.i : 0;
  int32_t chosen = argmax;
  if (p.temperature > 0.0f && best.v != -INFINITY) {
    const float inv_t = 1.0f / p.temperature;
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      x[i] = expf((edited[i] - best.v) * inv_t);
    }
    __syncthreads();
    float tau = 0.0f;  // keep w >= tau (w > 0 always holds for kept tokens below)
    if (p.top_k > 0 && p.top_k < vocab) {
      tau = LargestThreshold(x, vocab, static_cast<double>(p.top_k), true, sd);
    }
    if (p.top_p < 1.0f) {
      const double total = MassAtLeast(x, vocab, tau, false, sd);
      const float tau_p = LargestThreshold(x, vocab, p.top_p * total, false, sd);
      tau = fmaxf(tau, tau_p);
    }
    if (p.min_p > 0.0f) tau = fmaxf(tau, p.min_p);
    // Inverse CDF over the kept tokens in id order: each thread a contiguous range.
    const int per = (vocab + blockDim.x - 1) / blockDim.x;
    const int b = min(vocab, static_cast<int>(threadIdx.x) * per);
    const int e = min(vocab, b + per);
    double mine = 0.0;
    for (int i = b; i < e; ++i) {
      if (x[i] >= tau && x[i] > 0.0f) mine += x[i];
    }
    __syncthreads();
    prefix[threadIdx.x] = mine;
    __syncthreads();
    // Inclusive scan (Hillis-Steele) over the threads' sums.
    for (int o = 1; o < blockDim.x; o <<= 1) {
      const double add = threadIdx.x >= o ? prefix[threadIdx.x - o] : 0.0;
      __syncthreads();
      prefix[threadIdx.x] += add;
      __syncthreads();
    }
    const double sum = prefix[blockDim.x - 1];
    curandStatePhilox4_32_10_t rng;
    curand_init(p.seed, 0, p.step, &rng);
    const double u = static_cast<double>(curand(&rng) >> 8) * (1.0 / 16777216.0);  // [0, 1)
    const double r = u * sum;
    const double before = threadIdx.x > 0 ? prefix[threadIdx.x - 1] : 0.0;
    __shared__ int32_t picked;
    if (threadIdx.x == 0) picked = -1;
    __syncthreads();
    if (r >= before && r < prefix[threadIdx.x]) {
      double cum = before;
      for (int i = b; i < e; ++i) {
        if (x[i] >= tau && x[i] > 0.0f) {
          cum += x[i];
          if (r < cum) {
            picked = i;
            break;
          }
        }
      }
      if (picked < 0) {  // rounding inside this range: its last kept token
        for (int i = e - 1; i >= b; --i) {
          if (x[i] >= tau && x[i] > 0.0f) {
            picked = i;
            break;
          }
        }
      }
    }
    __syncthreads();
    chosen = picked >= 0 ? picked : argmax;  // r in the rounding slack at the end
  }

  // Log-probabilities of the raw logits.
  if (p.logprobs != 0) {
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, raw[i]);
    mx = BlockMax(mx, sv);
    double se = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x)
      se += exp(static_cast<double>(raw[i] - mx));
    se = BlockSumD(se, sd);
    const float lse = mx + static_cast<float>(log(se));
    if (threadIdx.x == 0) res->logprob = raw[chosen] - lse;
    ValIdx prev{INFINITY, -1};
    const int n = min(p.top_logprobs, kMaxTopLogprobs);
    for (int k = 0; k < n; ++k) {
      ValIdx cand{-INFINITY, INT32_MAX};
      for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = raw[i];
        // Strictly after prev in (value desc, id asc) order.
        if (v < prev.v || (v == prev.v && i > prev.i)) cand = Better(cand, ValIdx{v, i});
      }
      cand = BlockArgmax(cand, sv, si);
      if (threadIdx.x == 0) {
        res->top_ids[k] = cand.i;
        res->top_logprobs[k] = cand.v - lse;
      }
      prev = cand;
    }
  }
  if (threadIdx.x == 0) res->id = chosen;
}

}  // namespace

absl::Status SampleRows(const float* logits, int64_t rows, int64_t vocab,
                        const SamplingRowDev* params, float* scratch, SampleResultDev* results,
                        cudaStream_t stream) {
  if (rows < 0 || vocab < 1 || vocab > (int64_t{1} << 30)) {
    return ShapeError("SampleRows", absl::StrCat("rows ", rows, ", vocab ", vocab));
  }
  if (rows == 0) return absl::OkStatus();
  SampleKernel<<<rows, kThreads, 0, stream>>>(logits, static_cast<int>(vocab), params, scratch,
                                              results);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace jetserve::kernels::cuda
