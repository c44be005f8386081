// Sampling on the device: penalties, bans, temperature, top-k / top-p / min-p and a seeded
// counter-based draw (Philox), one block per row; only ids and requested log-probabilities need
// to go back to the host. Semantics follow engine/sampler.h step for step, with two documented
// differences: the random stream is Philox(seed, step) rather than the CPU's xoshiro, and the
// draw walks the kept tokens in id order (the CPU walks them heaviest first) — the same
// distribution, different samples. Filters are thresholds on the weight found by bisection, so
// ties at the top-k boundary keep every tied token (the CPU keeps the lower ids).
#ifndef JETSERVE_KERNELS_CUDA_SAMPLING_H_
#define JETSERVE_KERNELS_CUDA_SAMPLING_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace jetserve::kernels::cuda {

constexpr int kMaxTopLogprobs = 20;

// One row's parameters; the id lists point into device memory.
struct SamplingRowDev {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;         // Philox offset: the sequence's sample index
  int32_t logprobs = 0;      // 1: report the sampled token's log-probability
  int32_t top_logprobs = 0;  // and the N (<= kMaxTopLogprobs) most likely tokens'
  int32_t logits_row = -1;   // the logits row to sample; -1: this row's own (several rows of
                             // params may sample one logits row: the choices of n > 1)
  const int32_t* rep_ids = nullptr;  // distinct ids of prompt ∪ output (repetition_penalty)
  int32_t n_rep = 0;
  const int32_t* out_ids = nullptr;  // distinct output ids and their counts (presence/frequency)
  const int32_t* out_counts = nullptr;
  int32_t n_out = 0;
  const int32_t* bias_ids = nullptr;  // logit_bias
  const float* bias_values = nullptr;
  int32_t n_bias = 0;
  const int32_t* banned = nullptr;
  int32_t n_banned = 0;
};

struct SampleResultDev {
  int32_t id = -1;
  float logprob = 0.0f;  // of the raw logits' log-softmax
  int32_t top_ids[kMaxTopLogprobs];
  float top_logprobs[kMaxTopLogprobs];
};

// logits: [*, vocab] fp32 (not modified); params, results: [rows]; scratch: [rows, vocab].
absl::Status SampleRows(const float* logits, int64_t rows, int64_t vocab,
                        const SamplingRowDev* params, float* scratch, SampleResultDev* results,
                        cudaStream_t stream);

}  // namespace jetserve::kernels::cuda

#endif  // JETSERVE_KERNELS_CUDA_SAMPLING_H_
