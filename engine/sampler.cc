#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/elementwise.h"

namespace jetserve {

absl::Status ValidateSamplingParams(const SamplingParams& p, int32_t max_logprobs) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number >= 0, got ", p.temperature));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  }
  if (p.logprobs < 0 || p.logprobs > max_logprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs must be in [0, ", max_logprobs, "], got ", p.logprobs));
  }
  return absl::OkStatus();
}

SampledToken Sample(const float* logits, int32_t vocab, const SamplingParams& params, Rng& rng,
                    std::vector<float>& scratch) {
  SampledToken out;
  scratch.resize(vocab);
  kernels::cpu::LogSoftmax(logits, vocab, scratch.data());  // model log-probabilities
  const float* logp = scratch.data();

  if (params.temperature == 0.0f) {
    out.id = static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  } else {
    // Candidates in descending probability; top-k then top-p keep a prefix of them.
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    int32_t keep = vocab;
    if (params.top_k > 0) keep = std::min(keep, params.top_k);
    auto better = [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    if (keep < vocab) {
      std::partial_sort(order.begin(), order.begin() + keep, order.end(), better);
    } else {
      std::sort(order.begin(), order.end(), better);
    }
    // Tempered probabilities of the kept candidates.
    std::vector<double> probs(keep);
    const double max = logits[order[0]];
    double sum = 0.0;
    for (int32_t i = 0; i < keep; ++i) {
      probs[i] = std::exp((logits[order[i]] - max) / params.temperature);
      sum += probs[i];
    }
    if (params.top_p < 1.0f) {
      // Smallest prefix whose probability reaches top_p.
      double cum = 0.0;
      int32_t n = 0;
      while (n < keep) {
        cum += probs[n] / sum;
        ++n;
        if (cum >= params.top_p) break;
      }
      keep = n;
      sum = 0.0;
      for (int32_t i = 0; i < keep; ++i) sum += probs[i];
    }
    const double r = rng.Uniform() * sum;
    double cum = 0.0;
    out.id = order[keep - 1];
    for (int32_t i = 0; i < keep; ++i) {
      cum += probs[i];
      if (r < cum) {
        out.id = order[i];
        break;
      }
    }
  }
  out.logprob = logp[out.id];
  if (params.logprobs > 0) {
    const int32_t n = std::min(params.logprobs, vocab);
    std::vector<int32_t> idx(vocab);
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t a, int32_t b) {
      return logp[a] > logp[b] || (logp[a] == logp[b] && a < b);
    });
    for (int32_t i = 0; i < n; ++i) out.top.emplace_back(idx[i], logp[idx[i]]);
  }
  return out;
}

}  // namespace jetserve
