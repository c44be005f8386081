// What a client asks of the engine, and what the engine streams back. Plain C++ types: the
// server translates its protobuf messages into these and back.
#ifndef JETSERVE_ENGINE_REQUEST_H_
#define JETSERVE_ENGINE_REQUEST_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampler.h"
#include "engine/tokenizer/chat_template.h"

namespace jetserve {

enum class FinishReason {
  kStop,       // a stop token or stop string
  kLength,     // max_tokens, or the model's context limit
  kCancelled,  // Cancel(), a client gone, a deadline passed, or shutdown
  kError,      // the step failed
};
std::string_view FinishReasonName(FinishReason r);  // "stop", "length", "cancelled", "error"

struct EngineRequest {
  std::string request_id;  // empty: the engine assigns one
  // Nonzero: Cancel(request_id, owner) reaches this submission only, not a later request that
  // reuses the id once this one finished (a client's cancel can arrive just after the end).
  uint64_t owner = 0;
  // The prompt: token ids when non-empty; else chat messages when non-empty (turned into the
  // prompt by the model's chat template); else text (tokenised by the engine).
  std::vector<int32_t> prompt_ids;
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;  // messages: open the assistant's turn
  std::string prompt_text;
  bool allow_special = false;  // honour special-token text such as <|im_end|> in prompt_text

  SamplingParams sampling;  // temperature, top_k/top_p/min_p, penalties, bias, seed, logprobs
  int32_t n = 1;            // parallel samples ("choices") sharing one prefill
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;         // no end-of-sequence, stop token or stop string before this many
  std::vector<std::string> stop;  // stop strings, matched across token boundaries
  std::vector<int32_t> stop_token_ids;  // in addition to the model's eos ids
  bool ignore_eos = false;              // do not stop at the model's eos ids
  bool skip_special_tokens = true;      // leave special tokens' text out of the output text
  bool include_stop_str_in_output = false;
  // Past this, the request is finished as cancelled with status DEADLINE_EXCEEDED.
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

struct TokenLogprobs {
  int32_t id = -1;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // top-N (id, logprob), best first
};

// One message of a request's output stream: the tokens one choice produced since its previous
// message. A request with n > 1 interleaves the messages of its choices.
struct RequestOutput {
  std::string request_id;
  int32_t index = 0;                    // which of the request's n choices
  std::vector<int32_t> token_ids;       // new tokens
  std::string text;                     // new text (never a partial UTF-8 character)
  std::vector<TokenLogprobs> logprobs;  // one per new token when logprobs > 0
  bool finished = false;                // this choice is finished
  // The last message of the request: every choice is finished. The engine has released the
  // request's memory and id when this arrives.
  bool request_finished = false;
  // Set when finished:
  FinishReason finish_reason = FinishReason::kStop;
  absl::Status status;      // OK, or why the request ended abnormally (Cancelled, DeadlineExceeded,
                            // Unavailable at shutdown, Internal on a failed step)
  std::string stop_reason;  // the stop string or token id that ended it, if any
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;  // this choice's, so far
};

// Receives a request's outputs, in order, from the engine's step thread; the last one has
// request_finished = true. Must not block and must not call back into the engine.
using OutputSink = std::function<void(RequestOutput)>;

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_REQUEST_H_
