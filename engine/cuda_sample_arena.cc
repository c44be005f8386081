#include "engine/cuda_sample_arena.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/cuda_step_meta.h"

namespace jetserve {

absl::StatusOr<SampleArena> SampleArena::Pack(const std::vector<ForwardBackend::SampleSpec>& specs,
                                              int64_t kept_rows) {
  SampleArena a;
  const size_t n = specs.size();
  a.rows_.resize(n);
  a.lists_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const ForwardBackend::SampleSpec& sp = specs[i];
    if (sp.row < 0 || sp.row >= kept_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("SampleLast: row ", sp.row, " of ", kept_rows));
    }
    if (sp.params == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("SampleLast: spec ", i, " has no params"));
    }
    const SamplingParams& p = *sp.params;
    kernels::cuda::SamplingRowDev& r = a.rows_[i];
    r.temperature = p.temperature;
    r.top_k = p.top_k;
    r.top_p = p.top_p;
    r.min_p = p.min_p;
    r.repetition_penalty = p.repetition_penalty;
    r.presence_penalty = p.presence_penalty;
    r.frequency_penalty = p.frequency_penalty;
    r.seed = sp.seed;
    r.step = sp.step;
    r.logprobs = p.return_logprobs ? 1 : 0;
    r.top_logprobs = p.return_logprobs ? p.top_logprobs : 0;
    r.logits_row = static_cast<int32_t>(sp.row);
    ListOffsets& o = a.lists_[i];
    std::vector<int32_t>& ints = a.ints_;
    const TokenCounts* counts = sp.context.output_counts;
    o.rep = ints.size();
    if (p.repetition_penalty != 1.0f) {
      ints.insert(ints.end(), sp.context.prompt_tokens.begin(), sp.context.prompt_tokens.end());
      if (counts != nullptr) {
        for (const auto& [id, count] : *counts) {
          if (!std::binary_search(sp.context.prompt_tokens.begin(), sp.context.prompt_tokens.end(),
                                  id)) {
            ints.push_back(id);
          }
        }
      }
    }
    r.n_rep = static_cast<int32_t>(ints.size() - o.rep);
    o.out = ints.size();
    if ((p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) && counts != nullptr) {
      for (const auto& [id, count] : *counts) ints.push_back(id);
    }
    r.n_out = static_cast<int32_t>(ints.size() - o.out);
    o.counts = ints.size();
    if (r.n_out > 0) {
      for (const auto& [id, count] : *counts) ints.push_back(count);
    }
    o.bias = ints.size();
    for (const auto& [id, bias] : p.logit_bias) ints.push_back(id);
    r.n_bias = static_cast<int32_t>(p.logit_bias.size());
    o.bias_values = a.floats_.size();
    for (const auto& [id, bias] : p.logit_bias) a.floats_.push_back(bias);
    o.banned = ints.size();
    ints.insert(ints.end(), sp.context.banned.begin(), sp.context.banned.end());
    r.n_banned = static_cast<int32_t>(sp.context.banned.size());
  }
  a.rows_bytes_ = Align16(n * sizeof(kernels::cuda::SamplingRowDev));
  a.ints_bytes_ = Align16(a.ints_.size() * sizeof(int32_t));
  a.bytes_ = a.rows_bytes_ + a.ints_bytes_ + a.floats_.size() * sizeof(float);
  return a;
}

void SampleArena::WriteTo(char* host, const char* device) const {
  const auto* dev_ints = reinterpret_cast<const int32_t*>(device + ints_offset());
  const auto* dev_floats = reinterpret_cast<const float*>(device + floats_offset());
  for (size_t i = 0; i < rows_.size(); ++i) {
    kernels::cuda::SamplingRowDev r = rows_[i];
    const ListOffsets& o = lists_[i];
    r.rep_ids = dev_ints + o.rep;
    r.out_ids = dev_ints + o.out;
    r.out_counts = dev_ints + o.counts;
    r.bias_ids = dev_ints + o.bias;
    r.bias_values = dev_floats + o.bias_values;
    r.banned = dev_ints + o.banned;
    std::memcpy(host + i * sizeof(r), &r, sizeof(r));
  }
  if (!ints_.empty()) {
    std::memcpy(host + ints_offset(), ints_.data(), ints_.size() * sizeof(int32_t));
  }
  if (!floats_.empty()) {
    std::memcpy(host + floats_offset(), floats_.data(), floats_.size() * sizeof(float));
  }
}

}  // namespace jetserve
