// Builds a chat prompt from (role, content) messages the way the checkpoint's chat template
// does. The template (Jinja, from the checkpoint) must be one of the ChatML templates that
// chat_template_recognizer.h knows; jetserve then renders it natively, so the prompt equals the
// template's output without a Jinja interpreter in the server.
#ifndef JETSERVE_ENGINE_TOKENIZER_CHAT_TEMPLATE_H_
#define JETSERVE_ENGINE_TOKENIZER_CHAT_TEMPLATE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

namespace jetserve {

struct ChatMessage {
  std::string role;
  std::string content;
};

// Roles: "system", "user", "assistant". Others are refused (InvalidArgument), among them "tool"
// (jetserve's APIs have no tools) and "developer" (no Qwen template has it: Qwen2 would print it
// as a role, Qwen2.5 would silently drop the message; an API that wants OpenAI's meaning maps it
// to "system" itself). A system message that is not first is rendered as an ordinary
// "<|im_start|>system" turn, as every recognised template does.
//
// Holds a pointer to the tokenizer, which must outlive it. Immutable, so safe to share
// between threads.
class ChatTemplate {
 public:
  // The checkpoint's template: `<dir>/chat_template.jinja` if present, else tokenizer_config.json's
  // "chat_template" (a string, or a list of {"name","template"} objects: the one named
  // "default"). No template at all (neither file has one, or tokenizer_config.json is absent):
  // the documented fallback, ChatMl() below, with is_fallback() true so the server can log a
  // warning. A template that is not a recognised ChatML template, an unreadable or malformed
  // file, or a "chat_template" of another shape: FailedPrecondition naming the file and what
  // was not recognised.
  static absl::StatusOr<ChatTemplate> FromCheckpointDir(const std::string& dir,
                                                        const Tokenizer& tokenizer);
  // Same recognition on a template's source text (`source` names it in errors).
  static absl::StatusOr<ChatTemplate> FromTemplateText(std::string_view jinja,
                                                       std::string_view source,
                                                       const Tokenizer& tokenizer);
  // Plain ChatML with no default system prompt. FailedPrecondition when the tokenizer lacks
  // <|im_start|> or <|im_end|> (as do the other constructors).
  static absl::StatusOr<ChatTemplate> ChatMl(const Tokenizer& tokenizer);

  // The prompt's token ids. Template text such as <|im_start|> becomes its special token;
  // message content is encoded with allow_special = false, so "<|im_end|>" typed by a user is
  // plain characters (added tokens that are not special, such as Qwen's <tool_call>, are still
  // matched, as HF does). Otherwise equal to the tokenizer's encoding of Render()'s text with
  // special tokens honoured. Errors (InvalidArgument naming messages[i].role or
  // messages[i].content): empty list, unsupported role, invalid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Apply(const std::vector<ChatMessage>& messages,
                                             bool add_generation_prompt) const;
  // The rendered prompt text (what the Jinja template would output), for logs and tests. Same
  // errors as Apply.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) const;

  bool is_fallback() const { return is_fallback_; }
  const std::string& default_system_prompt() const { return default_system_prompt_; }  // "": none
  // One line for the startup log, e.g.
  // `chatml (qwen2.5 template from /m/tokenizer_config.json), default system prompt "You are..."`.
  std::string Describe() const;

 private:
  // Part of a prompt: a special token, or text from the template and messages.
  struct Piece {
    int32_t special = -1;
    std::string text;
  };

  ChatTemplate() = default;
  static absl::StatusOr<ChatTemplate> Create(const Tokenizer& tokenizer, std::string name,
                                             std::string source, std::string default_system,
                                             bool is_fallback);
  absl::StatusOr<std::vector<Piece>> Build(const std::vector<ChatMessage>& messages,
                                           bool add_generation_prompt) const;

  const Tokenizer* tokenizer_ = nullptr;
  int32_t im_start_ = -1;
  int32_t im_end_ = -1;
  std::string name_;    // the recognised template, e.g. "qwen2.5"
  std::string source_;  // where it came from
  std::string default_system_prompt_;
  bool is_fallback_ = false;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_TOKENIZER_CHAT_TEMPLATE_H_
