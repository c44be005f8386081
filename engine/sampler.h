// Turns one row of logits into a token under a request's sampling parameters. Each sequence has
// its own seeded generator, so a sequence's samples do not depend on what else is batched.
//
// The logits are processed in this order (as vLLM and HF transformers do):
//   1. logit_bias is added;
//   2. repetition_penalty (tokens in the prompt or the output: positive logits divided by it,
//      negative ones multiplied), then presence_penalty and frequency_penalty (tokens in the
//      output: minus presence once, minus frequency per occurrence), as the OpenAI API defines;
//   3. banned ids (e.g. end-of-sequence before min_tokens) are set to -inf;
//   4. temperature 0: the argmax (lowest id on ties). Otherwise softmax(logits / temperature),
//      restricted to the top_k most likely tokens, then to the smallest set of those whose
//      probability reaches top_p (renormalised over the top-k set), then to the tokens whose
//      probability is at least min_p times the most likely one's.
// Reported log-probabilities are those of the model's unmodified distribution
// (log_softmax of the raw logits), as vLLM reports them by default.
#ifndef JETSERVE_ENGINE_SAMPLER_H_
#define JETSERVE_ENGINE_SAMPLER_H_

#include <cstdint>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/random.h"

namespace jetserve {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off; > 1 discourages repeating prompt or output tokens
  float presence_penalty = 0.0f;    // [-2, 2]
  float frequency_penalty = 0.0f;   // [-2, 2]
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias in [-100, 100])
  uint64_t seed = 0;
  bool return_logprobs = false;  // report the sampled token's log-probability
  int32_t top_logprobs = 0;      // and the N most likely tokens' (requires return_logprobs)
};

// Checks ranges; messages start with the field's name after `field_prefix` (e.g. "sampling."),
// say what was given and what is allowed: "top_p: 0 is outside (0, 1]".
absl::Status ValidateSamplingParams(const SamplingParams& params, int32_t vocab_size,
                                    int32_t max_logprobs, std::string_view field_prefix = "");

// Each request samples from its own generator, seeded by the request.
using Rng = Xoshiro256;

// How often each token occurs in a sequence's output, for the penalties.
using TokenCounts = std::unordered_map<int32_t, int32_t>;

// What the penalties and bans need to know about the sequence being sampled.
struct SamplingContext {
  std::span<const int32_t> prompt_tokens;  // distinct prompt ids (repetition_penalty only)
  const TokenCounts* output_counts = nullptr;
  std::span<const int32_t> banned;  // ids that must not be sampled now
};

struct SampledToken {
  int32_t id = -1;
  float logprob = 0.0f;                        // natural log-probability under the model
  std::vector<std::pair<int32_t, float>> top;  // top-N (id, logprob), best first
};

// Holds reusable scratch buffers: one per thread that samples (the engine's step thread).
class Sampler {
 public:
  // Samples from logits [vocab].
  SampledToken Sample(const float* logits, int32_t vocab, const SamplingParams& params,
                      const SamplingContext& context, Rng& rng);

 private:
  // Applies steps 1-3; returns `logits` itself when none applies.
  const float* Process(const float* logits, int32_t vocab, const SamplingParams& params,
                       const SamplingContext& context);
  int32_t Draw(const float* logits, int32_t vocab, const SamplingParams& params, Rng& rng);

  std::vector<float> processed_;  // [vocab]
  std::vector<float> weights_;    // [vocab] exp((logit - max) / temperature)
  std::vector<int32_t> order_;    // candidate ids
  std::vector<float> logprobs_;   // [vocab]
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_SAMPLER_H_
