#include "server/proto_convert.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"

namespace jetserve {
namespace {

// Process-wide source of request ids and default seeds. std::random_device alone can be slow
// (a syscall per call); it seeds a generator under a mutex instead.
class RandomSource {
 public:
  uint64_t Next() {
    std::lock_guard<std::mutex> lock(mu_);
    return gen_();
  }

 private:
  std::mutex mu_;
  std::mt19937_64 gen_ ABSL_GUARDED_BY(mu_){std::random_device{}() ^
                                            (uint64_t{std::random_device{}()} << 32)};
};

RandomSource& Random() {
  static RandomSource* source = new RandomSource();  // never destroyed: used until exit
  return *source;
}

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

}  // namespace

std::string NewRequestId() {
  return absl::StrCat("cmpl-", absl::Hex(Random().Next(), absl::kZeroPad16),
                      absl::Hex(Random().Next(), absl::kZeroPad16));
}

absl::StatusOr<std::vector<ChatMessage>> ToChatMessages(const v1::ChatMessages& messages) {
  if (messages.messages().empty()) return Invalid("messages: the conversation is empty");
  std::vector<ChatMessage> out;
  for (const v1::ChatMessage& m : messages.messages()) out.push_back({m.role(), m.content()});
  return out;
}

uint64_t NewRandomSeed() { return Random().Next(); }

absl::Status ValidateTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                              int32_t vocab_size, const std::string& field) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Invalid(absl::StrCat(field, "[", i, "]: token id ", ids[i],
                                  " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EngineRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                              int32_t vocab_size, const EngineLimits& limits) {
  EngineRequest out;
  if (request.request_id().size() > kMaxRequestIdLength) {
    return Invalid(absl::StrCat("request_id: ", request.request_id().size(),
                                " characters, more than the limit of ", kMaxRequestIdLength));
  }
  out.request_id = request.request_id().empty() ? NewRequestId() : request.request_id();

  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (request.text().empty()) return Invalid("prompt: text is empty");
      out.prompt_text = request.text();
      break;
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return Invalid("prompt: token_ids.ids is empty");
      if (absl::Status s = ValidateTokenIds(ids, vocab_size, "token_ids.ids"); !s.ok()) return s;
      out.prompt_ids.assign(ids.begin(), ids.end());
      break;
    }
    case v1::GenerateRequest::kMessages: {
      absl::StatusOr<std::vector<ChatMessage>> messages = ToChatMessages(request.messages());
      if (!messages.ok()) return messages.status();
      out.messages = *std::move(messages);
      out.add_generation_prompt = request.messages().has_add_generation_prompt()
                                      ? request.messages().add_generation_prompt()
                                      : true;
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return Invalid("prompt: set one of text, token_ids or messages");
  }
  out.allow_special = request.honor_special_tokens();

  const v1::SamplingParams& p = request.sampling();
  // Unset: the default, within the server's limit (a client that set nothing must not be
  // refused for a value it never sent).
  out.max_tokens = p.has_max_tokens()
                       ? p.max_tokens()
                       : std::min<int64_t>(kDefaultMaxTokens, limits.max_output_tokens);
  if (out.max_tokens < 1 || out.max_tokens > limits.max_output_tokens) {
    return Invalid(absl::StrCat("sampling.max_tokens: ", out.max_tokens, " is outside [1, ",
                                limits.max_output_tokens, "] (the server's --max-output-tokens)"));
  }
  SamplingParams& s = out.sampling;
  s.temperature = p.has_temperature() ? p.temperature() : kDefaultTemperature;
  s.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  const int32_t top_k = p.has_top_k() ? p.top_k() : 0;
  if (top_k < -1) {
    return Invalid(absl::StrCat("sampling.top_k: ", top_k, " must be >= 0 (0 or -1: off)"));
  }
  s.top_k = top_k == -1 ? 0 : top_k;
  s.min_p = p.has_min_p() ? p.min_p() : 0.0f;
  s.repetition_penalty = p.has_repetition_penalty() ? p.repetition_penalty() : 1.0f;
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  // Sorted, so that the order of a protobuf map (unspecified) never changes results.
  s.logit_bias.assign(p.logit_bias().begin(), p.logit_bias().end());
  std::sort(s.logit_bias.begin(), s.logit_bias.end());
  s.seed = p.has_seed() ? p.seed() : Random().Next();
  s.return_logprobs = p.logprobs() > 0;
  s.top_logprobs = p.logprobs();
  if (p.logprobs() < 0) {
    return Invalid(absl::StrCat("sampling.logprobs: ", p.logprobs(), " is outside [0, ",
                                limits.max_logprobs, "] (the server's --max-logprobs)"));
  }
  if (absl::Status st = ValidateSamplingParams(s, vocab_size, limits.max_logprobs, "sampling.");
      !st.ok()) {
    return st;
  }
  out.n = p.has_n() ? p.n() : 1;
  if (out.n < 1 || out.n > limits.max_n) {
    return Invalid(absl::StrCat("sampling.n: ", out.n, " is outside [1, ", limits.max_n,
                                "] (the server's --max-n)"));
  }
  out.min_tokens = p.has_min_tokens() ? p.min_tokens() : 0;
  if (out.min_tokens < 0 || out.min_tokens > out.max_tokens) {
    return Invalid(absl::StrCat("sampling.min_tokens: ", out.min_tokens,
                                " is outside [0, max_tokens = ", out.max_tokens, "]"));
  }
  if (p.stop_size() > limits.max_stop_strings) {
    return Invalid(absl::StrCat("sampling.stop: ", p.stop_size(),
                                " stop strings, more than the limit of ", limits.max_stop_strings,
                                " (the server's --max-stop-strings)"));
  }
  for (int i = 0; i < p.stop_size(); ++i) {
    if (p.stop(i).empty()) return Invalid(absl::StrCat("sampling.stop[", i, "] is empty"));
    if (static_cast<int64_t>(p.stop(i).size()) > limits.max_stop_length) {
      return Invalid(absl::StrCat("sampling.stop[", i, "]: ", p.stop(i).size(),
                                  " bytes, more than the limit of ", limits.max_stop_length,
                                  " (the server's --max-stop-length)"));
    }
    out.stop.push_back(p.stop(i));
  }
  if (absl::Status s = ValidateTokenIds(p.stop_token_ids(), vocab_size, "sampling.stop_token_ids");
      !s.ok()) {
    return s;
  }
  out.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  out.ignore_eos = p.ignore_eos();
  out.skip_special_tokens = p.has_skip_special_tokens() ? p.skip_special_tokens() : true;
  out.include_stop_str_in_output = p.include_stop_str_in_output();
  return out;
}

v1::FinishReason ToProtoFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError:
      return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_ERROR;
}

AppendedBytes AppendOutput(const RequestOutput& output, const Tokenizer& tokenizer,
                           v1::GenerateResponse* response) {
  // Bounds per field: a tag and a length of up to 5 bytes each; a varint id of up to 5.
  constexpr size_t kFieldOverhead = 6;
  size_t added = 0, memory = 0;
  if (response->request_id().empty()) {
    response->set_request_id(output.request_id);
    added += output.request_id.size() + kFieldOverhead;
  }
  response->set_index(output.index);
  response->mutable_token_ids()->Add(output.token_ids.begin(), output.token_ids.end());
  added += 5 * output.token_ids.size() + kFieldOverhead;
  response->mutable_text()->append(output.text);
  added += output.text.size() + kFieldOverhead;
  for (const TokenLogprobs& lp : output.logprobs) {
    v1::TokenLogprobs* entry = response->add_logprobs();
    entry->set_token_id(lp.id);
    entry->set_logprob(lp.logprob);
    // Decode replaces the bytes of a partial UTF-8 character with U+FFFD, as proto3 strings
    // must be valid UTF-8.
    entry->set_token(tokenizer.Decode({lp.id}, /*skip_special=*/false));
    for (const auto& [id, logprob] : lp.top) {
      v1::TopLogprob* top = entry->add_top_logprobs();
      top->set_token_id(id);
      top->set_logprob(logprob);
      top->set_token(tokenizer.Decode({id}, /*skip_special=*/false));
    }
    added += entry->ByteSizeLong() + kFieldOverhead;
    memory += entry->SpaceUsedLong() + sizeof(void*);
  }
  if (output.finished) {
    response->set_finish_reason(ToProtoFinishReason(output.finish_reason));
    response->set_stop_reason(output.stop_reason);
    v1::Usage* usage = response->mutable_usage();
    usage->set_prompt_tokens(output.prompt_tokens);
    usage->set_completion_tokens(output.completion_tokens);
    usage->set_total_tokens(output.prompt_tokens + output.completion_tokens);
    added += output.stop_reason.size() + 4 * kFieldOverhead + 3 * 10;
  }
  // Ids and text grow in place (amortised doubling: up to twice their size).
  memory += 2 * (sizeof(int32_t) * output.token_ids.size() + output.text.size());
  return {added, memory};
}

}  // namespace jetserve
