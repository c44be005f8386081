#include "engine/null_backend.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/random.h"

namespace jetserve {

NullBackend::NullBackend(const ModelConfig& config) : vocab_(config.vocab_size) {
  for (int32_t id = 0; id < vocab_; ++id) {
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
        config.eos_token_ids.end()) {
      ordinary_.push_back(id);
    }
  }
  if (ordinary_.empty()) ordinary_.push_back(0);  // a vocabulary of nothing but EOS ids
}

absl::Status NullBackend::Forward(const ForwardBatch& batch, HybridMemory& memory,
                                  std::vector<float>* logits) {
  logits->assign(batch.logits_rows() * vocab_, 0.0f);
  return absl::OkStatus();
}

absl::Status NullBackend::ForwardKeepLogits(const ForwardBatch& batch, HybridMemory& memory) {
  kept_rows_ = batch.logits_rows();
  return absl::OkStatus();
}

size_t NullBackend::TokenIndex(uint64_t seed, uint64_t step) const {
  return SplitMix64(seed ^ SplitMix64(step + 0x6A09E667F3BCC909ull)) % ordinary_.size();
}

int32_t NullBackend::TokenFor(uint64_t seed, uint64_t step) const {
  return ordinary_[TokenIndex(seed, step)];
}

absl::Status NullBackend::SampleLast(const std::vector<SampleSpec>& specs,
                                     std::vector<SampledToken>* tokens) {
  const float uniform = -std::log(static_cast<float>(vocab_));
  tokens->assign(specs.size(), SampledToken{});
  for (size_t i = 0; i < specs.size(); ++i) {
    const SampleSpec& s = specs[i];
    if (s.row < 0 || s.row >= kept_rows_) {
      return absl::InvalidArgumentError(
          absl::StrCat("null device: logits row ", s.row, " of ", kept_rows_));
    }
    const size_t index = TokenIndex(s.seed, s.step);
    SampledToken& t = (*tokens)[i];
    t.id = ordinary_[index];
    if (s.params->return_logprobs) {
      t.logprob = uniform;
      // Under a uniform distribution any ids are the most likely: the sampled one and the next.
      for (int32_t k = 0; k < s.params->top_logprobs; ++k) {
        t.top.emplace_back(ordinary_[(index + k) % ordinary_.size()], uniform);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace jetserve
