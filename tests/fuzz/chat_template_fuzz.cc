// Fuzzes the chat template: recognition of arbitrary template text (ChatTemplate::FromTemplateText)
// and rendering of arbitrary conversations (Apply, Render) with the recognised templates, on the
// byte-level tokenizer of the default model.
//
// Input: byte 0 holds flags (bit 0: add_generation_prompt; bit 1: Qwen2.5 template, else plain
// ChatML; bit 2: the rest is template text, else a conversation). A conversation is fields
// separated by 0x1E: role, content, role, content, ...
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/fuzz/byte_level_tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace jetserve::fuzz {
namespace {

struct State {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chatml;
  std::unique_ptr<ChatTemplate> qwen25;
};

State* Load() {
  auto* s = new State();
  s->tokenizer = LoadByteLevelTokenizer();

  auto chatml = ChatTemplate::ChatMl(*s->tokenizer);
  FUZZ_CHECK(chatml.ok(), chatml.status().ToString());
  s->chatml = std::make_unique<ChatTemplate>(*std::move(chatml));
  // The published Qwen2.5 template (tests/tokenizer/chat_templates): it has a default system
  // prompt, which plain ChatML lacks.
  const std::string path =
      std::string(JETSERVE_SOURCE_DIR) + "/tests/tokenizer/chat_templates/qwen2_5.jinja";
  std::ifstream in(path, std::ios::binary);
  FUZZ_CHECK(in.good(), "cannot read " + path);
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  auto qwen25 = ChatTemplate::FromTemplateText(text, path, *s->tokenizer);
  FUZZ_CHECK(qwen25.ok(), qwen25.status().ToString());
  s->qwen25 = std::make_unique<ChatTemplate>(*std::move(qwen25));
  return s;
}

State& Get() {
  static State* s = Load();
  return *s;
}

bool KnownRole(std::string_view role) {
  return role == "system" || role == "user" || role == "assistant";
}

void CheckConversation(const ChatTemplate& tmpl, const Tokenizer& tok,
                       const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  bool expect_ok = !messages.empty();
  bool special_text = false;  // content that spells a special token
  for (const ChatMessage& m : messages) {
    expect_ok = expect_ok && KnownRole(m.role) && IsValidUtf8(m.content);
    special_text = special_text || absl::StrContains(m.content, "<|");
  }
  auto ids = tmpl.Apply(messages, add_generation_prompt);
  auto text = tmpl.Render(messages, add_generation_prompt);
  FUZZ_CHECK(ids.ok() == expect_ok, ids.status().ToString());
  FUZZ_CHECK(text.ok() == expect_ok, text.status().ToString());
  if (!expect_ok) {
    FUZZ_CHECK(ids.status().code() == absl::StatusCode::kInvalidArgument, ids.status().ToString());
    return;
  }
  FUZZ_CHECK(IsValidUtf8(*text), "rendered prompt is valid UTF-8");
  for (int32_t id : *ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), absl::StrCat("id ", id));
  // Every message's content is in the prompt, in order.
  size_t at = 0;
  for (const ChatMessage& m : messages) {
    size_t found = text->find(m.content, at);
    FUZZ_CHECK(found != std::string::npos, "content missing from the prompt: " + m.content);
    at = found + m.content.size();
  }
  // Every turn is closed with <|im_end|>; only the generation prompt leaves one open.
  FUZZ_CHECK(absl::EndsWith(*text, "<|im_start|>assistant\n") == add_generation_prompt,
             "generation prompt");
  // Content is never special, template text is: with no special-token text in any content the
  // ids equal the plain encoding of the rendered text with special tokens honoured.
  if (!special_text) {
    auto encoded = tok.Encode(*text, /*allow_special=*/true);
    FUZZ_CHECK(encoded.ok(), encoded.status().ToString());
    FUZZ_CHECK(*encoded == *ids, "Apply differs from Encode(Render)");
  }
}

}  // namespace
}  // namespace jetserve::fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  jetserve::fuzz::Get();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace jetserve;
  using namespace jetserve::fuzz;
  if (size == 0) return 0;
  State& s = Get();
  const uint8_t flags = data[0];
  const bool add_generation_prompt = (flags & 1) != 0;
  const ChatTemplate& fixed = (flags & 2) != 0 ? *s.qwen25 : *s.chatml;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);

  if ((flags & 4) != 0) {
    auto tmpl = ChatTemplate::FromTemplateText(rest, "fuzz.jinja", *s.tokenizer);
    if (!tmpl.ok()) {
      FUZZ_CHECK(tmpl.status().code() == absl::StatusCode::kFailedPrecondition,
                 tmpl.status().ToString());
      return 0;
    }
    // A recognised template renders any valid conversation.
    FUZZ_CHECK(!tmpl->Describe().empty(), "Describe");
    CheckConversation(*tmpl, *s.tokenizer,
                      {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}},
                      add_generation_prompt);
    return 0;
  }
  std::vector<ChatMessage> messages;
  if (!rest.empty()) {
    std::vector<std::string_view> fields = Split(rest, "\x1e");
    for (size_t i = 0; i < fields.size(); i += 2) {
      ChatMessage m;
      m.role = std::string(fields[i]);
      if (i + 1 < fields.size()) m.content = std::string(fields[i + 1]);
      messages.push_back(std::move(m));
    }
  }
  CheckConversation(fixed, *s.tokenizer, messages, add_generation_prompt);
  return 0;
}
