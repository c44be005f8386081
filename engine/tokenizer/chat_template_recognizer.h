// Recognition of the ChatML chat templates that jetserve renders natively. Checkpoints ship their
// chat template as Jinja source; rather than interpret arbitrary Jinja, jetserve accepts only
// templates that are, token for token, one of a few known ChatML templates (Qwen2, Qwen2.5, the
// embedded model's, plain ChatML), whatever their formatting, quoting or whitespace control.
// Anything else is refused: a template we cannot prove equivalent might build a different
// prompt than the one the model was trained on, silently.
#ifndef JETSERVE_ENGINE_TOKENIZER_CHAT_TEMPLATE_RECOGNIZER_H_
#define JETSERVE_ENGINE_TOKENIZER_CHAT_TEMPLATE_RECOGNIZER_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace jetserve {

// What a recognised template renders, for messages whose roles are system, user or assistant
// (and no tools): a system block first (messages[0] when it is a system message, else the
// default system prompt if there is one), then every other message as
// "<|im_start|>" role "\n" content "<|im_end|>\n", then "<|im_start|>assistant\n" when
// add_generation_prompt. All recognised templates share these rules; they differ only in the
// default system prompt.
struct RecognizedChatTemplate {
  std::string name;  // the known template it matched, e.g. "qwen2.5"
  bool has_default_system_prompt = false;
  std::string default_system_prompt;  // the literal from the template; never empty when present
};

// Recognises `jinja` (Jinja source as HF's apply_chat_template renders it: trim_blocks and
// lstrip_blocks on). Errors: FailedPrecondition naming `source` and what was not recognised,
// e.g. "uses <think> reasoning blocks (Qwen3-style)" or the first construct, with its line, that
// differs from the closest known template.
absl::StatusOr<RecognizedChatTemplate> RecognizeChatTemplate(std::string_view jinja,
                                                             std::string_view source);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_TOKENIZER_CHAT_TEMPLATE_RECOGNIZER_H_
