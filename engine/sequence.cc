#include "engine/sequence.h"

namespace jetserve {

Sequence::Sequence(EngineRequest request, std::vector<int32_t> prompt, OutputSink sink,
                   const Tokenizer* tokenizer, int64_t arrival_order)
    : arrival(Clock::now()),
      request_(std::move(request)),
      prompt_(std::move(prompt)),
      arrival_order_(arrival_order),
      rng_(request_.sampling.seed),
      sink_(std::move(sink)),
      detokenizer_(tokenizer, request_.skip_special_tokens),
      stop_matcher_(request_.stop, request_.include_stop_str_in_output) {}

RequestOutput Sequence::AppendToken(const SampledToken& token) {
  output_.push_back(token.id);
  RequestOutput out;
  out.request_id = id();
  out.token_ids.push_back(token.id);
  out.text = stop_matcher_.Add(detokenizer_.Add(token.id));
  if (request_.sampling.logprobs > 0) out.logprobs.push_back({token.id, token.logprob, token.top});
  out.prompt_tokens = static_cast<int32_t>(prompt_len());
  out.completion_tokens = static_cast<int32_t>(output_len());
  return out;
}

RequestOutput Sequence::Finish(FinishReason reason, absl::Status status, std::string stop_reason) {
  RequestOutput out;
  out.request_id = id();
  if (!stop_matcher_.stopped())
    out.text = stop_matcher_.Add(detokenizer_.Flush()) + stop_matcher_.Flush();
  out.finished = true;
  out.finish_reason = reason;
  out.status = std::move(status);
  out.stop_reason = std::move(stop_reason);
  out.prompt_tokens = static_cast<int32_t>(prompt_len());
  out.completion_tokens = static_cast<int32_t>(output_len());
  return out;
}

}  // namespace jetserve
