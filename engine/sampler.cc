#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/elementwise.h"

namespace jetserve {
namespace {

absl::Status Invalid(std::string_view prefix, std::string_view field, std::string_view what) {
  // (Debian's Abseil has its own string_view, which std::string_view does not convert to.)
  return absl::InvalidArgumentError(std::string(prefix) + std::string(field) + ": " +
                                    std::string(what));
}

bool InClosed(float v, float lo, float hi) { return v >= lo && v <= hi; }  // false for NaN

// Descending by weight, then ascending by id: a total order, so results never depend on the
// sort's tie handling.
struct HeavierFirst {
  const float* weights;
  bool operator()(int32_t a, int32_t b) const {
    return weights[a] > weights[b] || (weights[a] == weights[b] && a < b);
  }
};

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int32_t vocab_size,
                                    int32_t max_logprobs, std::string_view prefix) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return Invalid(prefix, "temperature",
                   absl::StrCat(p.temperature, " must be a finite number >= 0 (0 is greedy)"));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return Invalid(prefix, "top_p", absl::StrCat(p.top_p, " is outside (0, 1]"));
  }
  if (p.top_k < 0 || p.top_k > vocab_size) {
    return Invalid(prefix, "top_k",
                   absl::StrCat(p.top_k, " is outside [0, ", vocab_size, "] (0: off)"));
  }
  if (!InClosed(p.min_p, 0.0f, 1.0f)) {
    return Invalid(prefix, "min_p", absl::StrCat(p.min_p, " is outside [0, 1]"));
  }
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f) {
    return Invalid(prefix, "repetition_penalty",
                   absl::StrCat(p.repetition_penalty, " must be a finite number > 0 (1: off)"));
  }
  if (!InClosed(p.presence_penalty, -2.0f, 2.0f)) {
    return Invalid(prefix, "presence_penalty",
                   absl::StrCat(p.presence_penalty, " is outside [-2, 2]"));
  }
  if (!InClosed(p.frequency_penalty, -2.0f, 2.0f)) {
    return Invalid(prefix, "frequency_penalty",
                   absl::StrCat(p.frequency_penalty, " is outside [-2, 2]"));
  }
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return Invalid(
          prefix, "logit_bias",
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    if (!InClosed(bias, -100.0f, 100.0f)) {
      return Invalid(
          prefix, "logit_bias",
          absl::StrCat("the bias of token ", id, ", ", bias, ", is outside [-100, 100]"));
    }
  }
  if (p.top_logprobs < 0 || p.top_logprobs > max_logprobs) {
    return Invalid(prefix, "logprobs",
                   absl::StrCat(p.top_logprobs, " is outside [0, ", max_logprobs,
                                "] (the server's --max-logprobs)"));
  }
  return absl::OkStatus();
}

const float* Sampler::Process(const float* logits, int32_t vocab, const SamplingParams& p,
                              const SamplingContext& ctx) {
  const bool repetition = p.repetition_penalty != 1.0f;
  const bool counted = (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) &&
                       ctx.output_counts != nullptr && !ctx.output_counts->empty();
  if (p.logit_bias.empty() && !repetition && !counted && ctx.banned.empty()) return logits;
  processed_.assign(logits, logits + vocab);
  float* out = processed_.data();
  for (const auto& [id, bias] : p.logit_bias) out[id] += bias;
  if (repetition) {
    // Once per distinct token, whether it is in the prompt, the output or both.
    auto penalise = [&](int32_t id) {
      out[id] = out[id] > 0.0f ? out[id] / p.repetition_penalty : out[id] * p.repetition_penalty;
    };
    for (int32_t id : ctx.prompt_tokens) penalise(id);
    if (ctx.output_counts != nullptr) {
      for (const auto& [id, count] : *ctx.output_counts) {
        if (!std::binary_search(ctx.prompt_tokens.begin(), ctx.prompt_tokens.end(), id))
          penalise(id);
      }
    }
  }
  if (counted) {
    for (const auto& [id, count] : *ctx.output_counts) {
      out[id] -= p.presence_penalty + p.frequency_penalty * static_cast<float>(count);
    }
  }
  for (int32_t id : ctx.banned) out[id] = -std::numeric_limits<float>::infinity();
  return out;
}

int32_t Sampler::Draw(const float* logits, int32_t vocab, const SamplingParams& p, Rng& rng) {
  const float max = *std::max_element(logits, logits + vocab);
  const int32_t argmax = static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  if (p.temperature == 0.0f || max == -std::numeric_limits<float>::infinity()) return argmax;

  weights_.resize(vocab);
  float* w = weights_.data();
  const float inv_t = 1.0f / p.temperature;
  for (int32_t i = 0; i < vocab; ++i) w[i] = std::exp((logits[i] - max) * inv_t);  // max -> 1

  const bool filtered = (p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0f || p.min_p > 0.0f;
  if (!filtered) {
    // Plain softmax sampling: inverse CDF in id order, no sorting needed.
    double sum = 0.0;
    for (int32_t i = 0; i < vocab; ++i) sum += w[i];
    const double r = rng.Uniform() * sum;
    double cum = 0.0;
    for (int32_t i = 0; i < vocab; ++i) {
      cum += w[i];
      if (r < cum) return i;
    }
    return argmax;  // r landed in rounding slack at the end
  }

  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  const HeavierFirst heavier{w};
  size_t keep = order_.size();
  if (p.top_k > 0 && p.top_k < vocab) {
    std::nth_element(order_.begin(), order_.begin() + (p.top_k - 1), order_.end(), heavier);
    keep = p.top_k;
  }
  if (p.top_p < 1.0f) {
    // The smallest prefix (heaviest first) whose mass reaches top_p of the top-k set. Sort
    // only as far as needed: the first 64, then 4x more, ... (usually one round).
    double total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += w[order_[i]];
    const double target = p.top_p * total;
    size_t sorted = 0;
    double cum = 0.0;
    size_t n = 0;
    while (n == 0) {
      const size_t upto = std::min(keep, std::max<size_t>(64, sorted * 4));
      std::partial_sort(order_.begin() + sorted, order_.begin() + upto, order_.begin() + keep,
                        heavier);
      for (size_t i = sorted; i < upto; ++i) {
        cum += w[order_[i]];
        if (cum >= target) {
          n = i + 1;
          break;
        }
      }
      sorted = upto;
      if (sorted == keep && n == 0) n = keep;  // rounding: keep everything
    }
    keep = n;
  }
  if (p.min_p > 0.0f) {
    // Probability relative to the most likely token is w itself (the max has weight 1).
    const auto end = std::remove_if(order_.begin(), order_.begin() + keep,
                                    [&](int32_t id) { return w[id] < p.min_p; });
    keep = end - order_.begin();
  }
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i) sum += w[order_[i]];
  const double r = rng.Uniform() * sum;
  double cum = 0.0;
  int32_t last_positive = argmax;
  for (size_t i = 0; i < keep; ++i) {
    cum += w[order_[i]];
    if (w[order_[i]] > 0.0f) last_positive = order_[i];
    if (r < cum) return order_[i];
  }
  return last_positive;  // r landed in rounding slack at the end
}

SampledToken Sampler::Sample(const float* logits, int32_t vocab, const SamplingParams& params,
                             const SamplingContext& context, Rng& rng) {
  SampledToken out;
  out.id = Draw(Process(logits, vocab, params, context), vocab, params, rng);
  if (!params.return_logprobs) return out;
  logprobs_.resize(vocab);
  kernels::cpu::LogSoftmax(logits, vocab, logprobs_.data());  // the model's, unprocessed
  const float* logp = logprobs_.data();
  out.logprob = logp[out.id];
  if (params.top_logprobs > 0) {
    const int32_t n = std::min(params.top_logprobs, vocab);
    order_.resize(vocab);
    std::iota(order_.begin(), order_.end(), 0);
    std::partial_sort(order_.begin(), order_.begin() + n, order_.end(), HeavierFirst{logp});
    for (int32_t i = 0; i < n; ++i) out.top.emplace_back(order_[i], logp[order_[i]]);
  }
  return out;
}

}  // namespace jetserve
