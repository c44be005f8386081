// Loading the checkpoint's chat template and rendering ChatML prompts natively. The prompt is
// built as pieces (special token | text) so that the template's own markers become special
// tokens while message content never does, whatever it contains.
#include "engine/tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "engine/tokenizer/chat_template_recognizer.h"
#include "engine/tokenizer/str_util.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace jetserve {
namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kBuiltIn = "built in";

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::FailedPreconditionError(tok::Cat("cannot open ", path.string()));
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::FailedPreconditionError(tok::Cat("error reading ", path.string()));
  return buf.str();
}

// For error messages and logs: valid UTF-8 as is (quotes and control characters escaped),
// anything else hex-escaped.
std::string Quoted(std::string_view s) {
  if (utf8::FindInvalid(s) != std::string_view::npos) {
    return tok::Cat("\"", absl::CHexEscape(tok::AbslView(s)), "\"");
  }
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::CHexEscape(tok::AbslView(std::string_view(&c, 1)));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Create(const Tokenizer& tokenizer, std::string name,
                                                  std::string source, std::string default_system,
                                                  bool is_fallback) {
  ChatTemplate t;
  t.tokenizer_ = &tokenizer;
  t.im_start_ = tokenizer.TokenId(kImStart);
  t.im_end_ = tokenizer.TokenId(kImEnd);
  for (auto [token, id] : {std::pair{kImStart, t.im_start_}, std::pair{kImEnd, t.im_end_}}) {
    if (id < 0) {
      return absl::FailedPreconditionError(tok::Cat(source, ": the tokenizer has no ", token,
                                                    " token, which the ChatML template writes"));
    }
    // Pieces are encoded separately, which equals encoding the rendered text only if the
    // markers leave the text around them alone (no lstrip/rstrip on the added token).
    absl::StatusOr<std::vector<int32_t>> joined =
        tokenizer.Encode(tok::Cat(" ", token, " \n"), /*allow_special=*/true);
    absl::StatusOr<std::vector<int32_t>> left = tokenizer.Encode(" ", false);
    absl::StatusOr<std::vector<int32_t>> right = tokenizer.Encode(" \n", false);
    if (!joined.ok() || !left.ok() || !right.ok()) {
      return absl::FailedPreconditionError(
          tok::Cat(source, ": the tokenizer cannot encode text around ", token));
    }
    std::vector<int32_t> pieces = *left;
    pieces.push_back(id);
    pieces.insert(pieces.end(), right->begin(), right->end());
    if (*joined != pieces) {
      return absl::FailedPreconditionError(
          tok::Cat(source, ": the tokenizer's ", token,
                   " token changes the text around it (lstrip/rstrip), which jetserve's prompt "
                   "building does not reproduce"));
    }
  }
  if (!default_system.empty()) {
    // The default prompt is template text, so the template would turn special-token text in it
    // into special tokens; the prompt builder treats it as plain text. Refuse the difference.
    absl::StatusOr<std::vector<int32_t>> special = tokenizer.Encode(default_system, true);
    absl::StatusOr<std::vector<int32_t>> plain = tokenizer.Encode(default_system, false);
    if (!special.ok() || !plain.ok()) {
      return absl::FailedPreconditionError(
          tok::Cat(source, ": the default system prompt cannot be encoded: ",
                   std::string((special.ok() ? plain : special).status().message())));
    }
    if (*special != *plain) {
      return absl::FailedPreconditionError(tok::Cat(
          source,
          ": the default system prompt contains special-token text, which is not supported"));
    }
  }
  t.name_ = std::move(name);
  t.source_ = std::move(source);
  t.default_system_prompt_ = std::move(default_system);
  t.is_fallback_ = is_fallback;
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTemplateText(std::string_view jinja,
                                                            std::string_view source,
                                                            const Tokenizer& tokenizer) {
  absl::StatusOr<RecognizedChatTemplate> known = RecognizeChatTemplate(jinja, source);
  if (!known.ok()) return known.status();
  return Create(tokenizer, known->name, std::string(source), known->default_system_prompt,
                /*is_fallback=*/false);
}

absl::StatusOr<ChatTemplate> ChatTemplate::ChatMl(const Tokenizer& tokenizer) {
  return Create(tokenizer, "chatml", std::string(kBuiltIn), "", /*is_fallback=*/false);
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromCheckpointDir(const std::string& dir,
                                                             const Tokenizer& tokenizer) {
  const std::filesystem::path root(dir);
  // A standalone template file takes precedence, as in HF transformers.
  const std::filesystem::path jinja_path = root / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path)) {
    absl::StatusOr<std::string> text = ReadFile(jinja_path);
    if (!text.ok()) return text.status();
    return FromTemplateText(*text, jinja_path.string(), tokenizer);
  }

  const std::filesystem::path config_path = root / "tokenizer_config.json";
  const std::string fallback_source =
      tok::Cat("no chat template in ", dir,
               ": neither chat_template.jinja nor a \"chat_template\" in tokenizer_config.json");
  if (!std::filesystem::exists(config_path)) {
    return Create(tokenizer, "chatml", fallback_source, "", /*is_fallback=*/true);
  }
  absl::StatusOr<std::string> text = ReadFile(config_path);
  if (!text.ok()) return text.status();
  const nlohmann::json config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::FailedPreconditionError(
        tok::Cat(config_path.string(), ": not a JSON object, so its chat template is unknown"));
  }
  const auto field = config.find("chat_template");
  if (field == config.end() || field->is_null()) {
    return Create(tokenizer, "chatml", fallback_source, "", /*is_fallback=*/true);
  }
  if (field->is_string()) {
    return FromTemplateText(field->get_ref<const std::string&>(),
                            tok::Cat(config_path.string(), " (chat_template)"), tokenizer);
  }
  if (field->is_array()) {
    // Named templates, as HF writes them when a tokenizer has several (e.g. "default",
    // "tool_use"); the chat prompt is the "default" one.
    std::string names;
    for (const nlohmann::json& entry : *field) {
      const bool well_formed = entry.is_object() && entry.contains("name") &&
                               entry["name"].is_string() && entry.contains("template") &&
                               entry["template"].is_string();
      if (!well_formed) {
        return absl::FailedPreconditionError(
            tok::Cat(config_path.string(), ": field 'chat_template': a list entry is not a ",
                     "{\"name\": string, \"template\": string} object"));
      }
      const std::string& name = entry["name"].get_ref<const std::string&>();
      if (name == "default") {
        return FromTemplateText(entry["template"].get_ref<const std::string&>(),
                                tok::Cat(config_path.string(), " (chat_template \"default\")"),
                                tokenizer);
      }
      names += tok::Cat(names.empty() ? "" : ", ", Quoted(name));
    }
    return absl::FailedPreconditionError(
        tok::Cat(config_path.string(), ": field 'chat_template' has no template named ",
                 "\"default\" (it has: ", names.empty() ? "none" : names, ")"));
  }
  return absl::FailedPreconditionError(
      tok::Cat(config_path.string(),
               ": field 'chat_template' is neither a string nor a list of named templates"));
}

absl::StatusOr<std::vector<ChatTemplate::Piece>> ChatTemplate::Build(
    const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  if (messages.empty()) {
    return absl::InvalidArgumentError("messages: empty; a chat needs at least one message");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role == "tool") {
      return absl::InvalidArgumentError(
          tok::Cat("messages[", i, "].role: role 'tool' is not supported (no tools in this API)"));
    }
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(tok::Cat("messages[", i, "].role: unknown role ",
                                                 Quoted(role),
                                                 "; expected system, user or assistant"));
    }
    if (size_t bad = utf8::FindInvalid(messages[i].content); bad != std::string::npos) {
      return absl::InvalidArgumentError(
          tok::Cat("messages[", i, "].content: invalid UTF-8 at byte ", bad));
    }
  }

  std::vector<Piece> pieces;
  auto special = [&](int32_t id) {
    Piece piece;
    piece.special = id;
    pieces.push_back(std::move(piece));
  };
  auto text = [&](std::string_view s) {
    if (pieces.empty() || pieces.back().special >= 0) pieces.push_back(Piece{});
    pieces.back().text.append(s);
  };
  auto turn = [&](std::string_view role, std::string_view content) {
    special(im_start_);
    text(role);
    text("\n");
    text(content);
    special(im_end_);
    text("\n");
  };

  // The system block: the conversation's own system message when it opens with one, else the
  // template's default. A later system message is an ordinary turn.
  size_t first = 0;
  if (messages[0].role == "system") {
    turn("system", messages[0].content);
    first = 1;
  } else if (!default_system_prompt_.empty()) {
    turn("system", default_system_prompt_);
  }
  for (size_t i = first; i < messages.size(); ++i) turn(messages[i].role, messages[i].content);
  if (add_generation_prompt) {
    special(im_start_);
    text("assistant\n");
  }
  return pieces;
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt) const {
  absl::StatusOr<std::vector<Piece>> pieces = Build(messages, add_generation_prompt);
  if (!pieces.ok()) return pieces.status();
  std::string out;
  for (const Piece& piece : *pieces) {
    if (piece.special >= 0) {
      out.append(piece.special == im_start_ ? kImStart : kImEnd);
    } else {
      out.append(piece.text);
    }
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> ChatTemplate::Apply(const std::vector<ChatMessage>& messages,
                                                         bool add_generation_prompt) const {
  absl::StatusOr<std::vector<Piece>> pieces = Build(messages, add_generation_prompt);
  if (!pieces.ok()) return pieces.status();
  std::vector<int32_t> ids;
  for (const Piece& piece : *pieces) {
    if (piece.special >= 0) {
      ids.push_back(piece.special);
      continue;
    }
    absl::StatusOr<std::vector<int32_t>> encoded =
        tokenizer_->Encode(piece.text, /*allow_special=*/false);
    if (!encoded.ok()) return encoded.status();
    ids.insert(ids.end(), encoded->begin(), encoded->end());
  }
  return ids;
}

std::string ChatTemplate::Describe() const {
  std::string out;
  if (is_fallback_) {
    out = tok::Cat("chatml fallback (", source_, ")");
  } else if (source_ == kBuiltIn) {
    out = "chatml (built in)";
  } else {
    out = tok::Cat("chatml (", name_, " template from ", source_, ")");
  }
  if (default_system_prompt_.empty()) return out + ", no default system prompt";
  return tok::Cat(out, ", default system prompt ", Quoted(default_system_prompt_));
}

}  // namespace jetserve
