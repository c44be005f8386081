// Turns one row of logits into a token under a request's sampling parameters. Each sequence has
// its own seeded generator, so a sequence's samples do not depend on what else is batched.
#ifndef JETSERVE_ENGINE_SAMPLER_H_
#define JETSERVE_ENGINE_SAMPLER_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/random.h"

namespace jetserve {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 0;
  int32_t logprobs = 0;  // top-N log-probabilities to report per token (0: none)
};

// Checks ranges: temperature finite and >= 0, top_p in (0, 1], top_k >= 0, logprobs in
// [0, max_logprobs]. Messages name the field.
absl::Status ValidateSamplingParams(const SamplingParams& params, int32_t max_logprobs);

// Each request samples from its own generator, seeded by the request.
using Rng = Xoshiro256;

struct SampledToken {
  int32_t id = -1;
  float logprob = 0.0f;                        // natural log-probability under the model
  std::vector<std::pair<int32_t, float>> top;  // top-N (id, logprob), best first
};

// Samples from logits [vocab]. Log-probabilities are those of the unmodified model distribution
// (log_softmax of the raw logits), as vLLM reports them. `scratch` is reused between calls.
SampledToken Sample(const float* logits, int32_t vocab, const SamplingParams& params, Rng& rng,
                    std::vector<float>& scratch);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_SAMPLER_H_
