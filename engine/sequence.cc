#include "engine/sequence.h"

#include <algorithm>

namespace jetserve {
namespace {

std::vector<int32_t> DistinctSorted(std::vector<int32_t> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

// Choice 0 uses the request's seed as is (so n = 1 matches a plain seeded request); the others
// derive theirs from it and their index.
uint64_t ChoiceSeed(uint64_t seed, int32_t index) {
  return index == 0 ? seed : SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(index)));
}

}  // namespace

RequestGroup::RequestGroup(EngineRequest r, std::vector<int32_t> p, OutputSink s)
    : request(std::move(r)),
      prompt(std::move(p)),
      prompt_distinct(request.sampling.repetition_penalty != 1.0f ? DistinctSorted(prompt)
                                                                  : std::vector<int32_t>{}),
      sink(std::move(s)),
      arrival(Clock::now()),
      unfinished(request.n) {}

Sequence::Sequence(std::shared_ptr<RequestGroup> group, const Tokenizer* tokenizer,
                   int64_t arrival_order)
    : Sequence(std::move(group), 0, tokenizer, arrival_order) {}

Sequence::Sequence(std::shared_ptr<RequestGroup> group, int32_t index, const Tokenizer* tokenizer,
                   int64_t arrival_order)
    : group_(std::move(group)),
      index_(index),
      tokenizer_(tokenizer),
      arrival_order_(arrival_order),
      rng_(ChoiceSeed(group_->request.sampling.seed, index)),
      detokenizer_(tokenizer, group_->request.skip_special_tokens),
      stop_matcher_(group_->request.stop, group_->request.include_stop_str_in_output) {}

std::unique_ptr<Sequence> Sequence::ForkChoice(int32_t index) const {
  // Forks happen before the first token is sampled, so only the computed count carries over.
  auto child = std::unique_ptr<Sequence>(new Sequence(group_, index, tokenizer_, arrival_order_));
  child->num_computed_ = num_computed_;
  child->first_scheduled = first_scheduled;
  return child;
}

SamplingContext Sequence::sampling_context(const std::vector<int32_t>& eos_ids) {
  const EngineRequest& r = request();
  banned_.clear();
  if (output_len() < r.min_tokens) {
    if (!r.ignore_eos) banned_ = eos_ids;
    banned_.insert(banned_.end(), r.stop_token_ids.begin(), r.stop_token_ids.end());
  }
  SamplingContext ctx;
  ctx.prompt_tokens = group_->prompt_distinct;
  ctx.output_counts = &output_counts_;
  ctx.banned = banned_;
  return ctx;
}

RequestOutput Sequence::AppendToken(const SampledToken& token) {
  output_.push_back(token.id);
  ++output_counts_[token.id];
  RequestOutput out;
  out.request_id = id();
  out.index = index_;
  out.token_ids.push_back(token.id);
  const bool may_stop = output_len() >= request().min_tokens;
  out.text = stop_matcher_.Add(detokenizer_.Add(token.id), may_stop);
  if (request().sampling.return_logprobs)
    out.logprobs.push_back({token.id, token.logprob, token.top});
  out.prompt_tokens = static_cast<int32_t>(prompt_len());
  out.completion_tokens = static_cast<int32_t>(output_len());
  return out;
}

RequestOutput Sequence::Finish(FinishReason reason, absl::Status status, std::string stop_reason) {
  RequestOutput out;
  out.request_id = id();
  out.index = index_;
  if (!stop_matcher_.stopped())
    out.text = stop_matcher_.Add(detokenizer_.Flush(), output_len() >= request().min_tokens) +
               stop_matcher_.Flush();
  out.finished = true;
  out.finish_reason = reason;
  out.status = std::move(status);
  out.stop_reason = std::move(stop_reason);
  out.prompt_tokens = static_cast<int32_t>(prompt_len());
  out.completion_tokens = static_cast<int32_t>(output_len());
  return out;
}

}  // namespace jetserve
