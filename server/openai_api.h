// The OpenAI Completions and Chat Completions request and response formats (with vLLM's
// extensions: top_k, min_p, repetition_penalty, min_tokens, ignore_eos, stop_token_ids,
// skip_special_tokens, include_stop_str_in_output), translated to and from engine requests.
// Pure functions of JSON: the HTTP server (http_server.h) does the I/O.
#ifndef JETSERVE_SERVER_OPENAI_API_H_
#define JETSERVE_SERVER_OPENAI_API_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/request.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace jetserve {

enum class ApiKind { kCompletions, kChat };

// One HTTP request: one engine request per prompt (a completions request may carry several),
// each with n choices.
struct OpenAiJob {
  ApiKind kind = ApiKind::kCompletions;
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: the prompt's text before each choice's text
  int32_t n = 1;
  std::vector<EngineRequest> requests;
  // Completions: the `logprobs` top-N; chat: top_logprobs. -1: no logprobs at all.
  int32_t logprobs = -1;
};

// Validates and translates a request body. Errors are INVALID_ARGUMENT naming the field (the
// HTTP server answers 400), or NOT_FOUND for a model name that is not the served one (404).
absl::StatusOr<OpenAiJob> ParseOpenAiRequest(ApiKind kind, const nlohmann::json& body,
                                             const std::string& model_name,
                                             const EngineLimits& limits, int32_t vocab_size);

// The OpenAI error object: {"error": {"message", "type", "param", "code"}}, with the message a
// client may see (ForClient: internal errors' details stay in the server's log).
nlohmann::json ErrorJson(const absl::Status& status);
// The HTTP status for an error: 400, 404, 429, 503, 504 or 500.
int HttpStatusFor(absl::StatusCode code);

// Accumulates one choice's outputs into its response JSON.
class ChoiceBuilder {
 public:
  ChoiceBuilder(const OpenAiJob& job, int32_t index, const Tokenizer& tokenizer);
  // Adds one engine output (the choice's own).
  void Add(const RequestOutput& output);
  // The choice for a non-streaming response.
  nlohmann::json Final() const;
  // The streamed chunk's choice for one output (delta text and logprobs since the last).
  nlohmann::json Delta(const RequestOutput& output, bool first) const;

  int32_t completion_tokens() const { return completion_tokens_; }
  int32_t prompt_tokens() const { return prompt_tokens_; }

 private:
  // Completions' logprobs for `lps`, the first at character `text_offset` of the choice's
  // generated text (echo, which would shift it, is refused with logprobs).
  nlohmann::json LogprobsJson(const std::vector<TokenLogprobs>& lps, size_t text_offset) const;
  // A token (its bytes) as completions' logprobs name it: its text, or "bytes:\xNN..." when its
  // bytes alone are not valid UTF-8 (OpenAI's form; distinct for distinct tokens).
  static std::string TokenName(const std::string& bytes);

  const OpenAiJob& job_;
  int32_t index_;
  const Tokenizer& tokenizer_;
  std::string text_;
  std::vector<TokenLogprobs> logprobs_;
  // Characters the generated tokens' bytes make up to the last Add, and before it (where the
  // last output's tokens start: a streamed chunk's offsets).
  size_t token_chars_ = 0;
  size_t last_output_chars_ = 0;
  std::string finish_reason_;
  std::string stop_reason_;
  int32_t prompt_tokens_ = 0;
  int32_t completion_tokens_ = 0;
};

// "stop" or "length" (cancelled and failed requests end in an error instead).
std::string OpenAiFinishReason(FinishReason reason);

// The envelope of a response or a streamed chunk: id, object, created, model, choices.
nlohmann::json ResponseEnvelope(const OpenAiJob& job, const std::string& model_name, bool chunk);

// The usage of a job's choices: each prompt counted once (choices i·n … i·n+n-1 share prompt
// i), every choice's completion tokens.
nlohmann::json UsageJson(const std::vector<ChoiceBuilder>& choices, int32_t n);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_OPENAI_API_H_
