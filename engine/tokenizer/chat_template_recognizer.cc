// Recognition by comparison: the candidate template and each known template are lexed into the
// same canonical form (one item per Jinja tag, expression tokens with quoting, `x['key']` vs
// `x.key` and literal concatenation normalised, whitespace-control applied to the text between
// tags), and the candidate must equal a known template item for item. Known templates may
// leave a branch unconstrained (`{% __any__ %}`) where that branch cannot run for the requests
// jetserve renders (Qwen2.5's tool branches: jetserve passes no tools and refuses the tool
// role), and may capture one string (the default system prompt).
#include "engine/tokenizer/chat_template_recognizer.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/tokenizer/str_util.h"

namespace jetserve {
namespace {

enum class TokKind { kName, kString, kNumber, kOp };

struct JinjaToken {
  TokKind kind;
  std::string text;  // names, numbers, operators: as written; strings: the decoded value
  // A string with an escape sequence that is not decoded here (\u, \x, ...). Its value is
  // unknown, so it never equals a known template's string: such a template is refused rather
  // than read with a wrong value.
  bool opaque = false;
};

enum class ItemKind { kStatement, kExpression, kText };

struct Item {
  ItemKind kind = ItemKind::kText;
  std::vector<JinjaToken> tokens;  // statements and expressions
  std::string text;                // kText: the text the template outputs there
  int line = 0;
  std::string raw;  // the tag as written, for error messages
};

// Where the default system prompt sits in a known template's string literal.
constexpr std::string_view kCaptureMarker = "@@DEFAULT_SYSTEM_PROMPT@@";
// A known template's placeholder for a branch that never runs for jetserve's requests.
constexpr std::string_view kAnyBranch = "__any__";

struct KnownTemplate {
  const char* name;
  const char* jinja;
};

// The known templates, written in our own layout; only their canonical form matters.
// Qwen2.5-Instruct (tokenizer_config.json of Qwen/Qwen2.5-*-Instruct). Its tool branches cannot
// run here: `tools` is never passed, a message never has tool_calls, and the tool role is refused
// before rendering.
constexpr KnownTemplate kQwen25 = {"qwen2.5", R"jinja(
{%- if tools %}
  {%- __any__ %}
{%- else %}
  {%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
  {%- else %}
    {{- '<|im_start|>system\n@@DEFAULT_SYSTEM_PROMPT@@<|im_end|>\n' }}
  {%- endif %}
{%- endif %}
{%- for message in messages %}
  {%- if (message.role == 'user') or (message.role == 'system' and not loop.first)
         or (message.role == 'assistant' and not message.tool_calls) %}
    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
  {%- elif message.role == 'assistant' %}
    {%- __any__ %}
  {%- elif message.role == 'tool' %}
    {%- __any__ %}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\n' }}
{%- endif %}
)jinja"};

// Qwen2-Instruct (and Qwen1.5's later revisions).
constexpr KnownTemplate kQwen2 = {"qwen2", R"jinja(
{%- for message in messages %}
  {%- if loop.first and messages[0].role != 'system' %}
    {{- '<|im_start|>system\n@@DEFAULT_SYSTEM_PROMPT@@<|im_end|>\n' }}
  {%- endif %}
  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\n' }}
{%- endif %}
)jinja"};

// The embedded default model's template (byte_level_tokenizer.cc): Qwen2.5's without tools.
constexpr KnownTemplate kChatMlSystemFirst = {"chatml-default-system", R"jinja(
{%- if messages[0].role == 'system' %}
  {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- else %}
  {{- '<|im_start|>system\n@@DEFAULT_SYSTEM_PROMPT@@<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
  {%- if not (loop.first and message.role == 'system') %}
    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\n' }}
{%- endif %}
)jinja"};

// Plain ChatML, no default system prompt (many ChatML fine-tunes ship exactly this).
constexpr KnownTemplate kChatMl = {"chatml", R"jinja(
{%- for message in messages %}
  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\n' }}
{%- endif %}
)jinja"};

constexpr const KnownTemplate* kKnownTemplates[] = {&kQwen25, &kQwen2, &kChatMlSystemFirst,
                                                    &kChatMl};

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsIdentifier(std::string_view s) {
  if (s.empty() || !IsNameStart(s[0])) return false;
  return std::all_of(s.begin(), s.end(), IsNameChar);
}

// One line for an error message: newlines shown as \n, long text cut.
std::string Excerpt(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  if (out.size() > 120) out = out.substr(0, 117) + "...";
  return out;
}

// A tag as the lexer finds it, before its surrounding text is whitespace-processed.
struct RawTag {
  char kind = '{';            // '{' expression, '%' statement, '#' comment
  size_t begin = 0;           // offset of the opening brace
  size_t end = 0;             // offset just past the closing brace
  bool strip_before = false;  // `{%-`: strip all whitespace before the tag
  bool keep_before = false;   // `{%+`: no lstrip_blocks before the tag
  bool strip_after = false;   // `-%}`: strip all whitespace after the tag
  bool keep_after = false;    // `+%}`: no trim_blocks after the tag
  std::vector<JinjaToken> tokens;
};

class Lexer {
 public:
  explicit Lexer(std::string_view jinja) {
    // As Jinja does: newlines normalised to \n, and one trailing newline dropped
    // (keep_trailing_newline is off in HF's environment).
    src_.reserve(jinja.size());
    for (size_t i = 0; i < jinja.size(); ++i) {
      if (jinja[i] == '\r') {
        src_ += '\n';
        if (i + 1 < jinja.size() && jinja[i + 1] == '\n') ++i;
      } else {
        src_ += jinja[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  absl::StatusOr<std::vector<Item>> Run() {
    std::vector<RawTag> tags;
    std::vector<std::pair<size_t, size_t>> texts;  // text before tags[i]; the last: the tail
    size_t pos = 0;
    while (true) {
      size_t open = FindTagOpen(pos);
      texts.emplace_back(pos, open);
      if (open == std::string::npos) break;
      absl::StatusOr<RawTag> tag = LexTag(open);
      if (!tag.ok()) return tag.status();
      pos = tag->end;
      tags.push_back(*std::move(tag));
    }
    texts.back().second = src_.size();

    std::vector<Item> items;
    for (size_t i = 0; i < texts.size(); ++i) {
      const RawTag* prev = i > 0 ? &tags[i - 1] : nullptr;
      const RawTag* next = i < tags.size() ? &tags[i] : nullptr;
      std::string out = OutputText(texts[i].first, texts[i].second, prev, next);
      if (!out.empty()) {
        Item text;
        text.kind = ItemKind::kText;
        text.text = out;
        text.line = LineOf(texts[i].first);
        text.raw = src_.substr(texts[i].first, texts[i].second - texts[i].first);
        items.push_back(std::move(text));
      }
      if (next == nullptr || next->kind == '#') continue;
      Item item;
      item.kind = next->kind == '%' ? ItemKind::kStatement : ItemKind::kExpression;
      item.tokens = Canonical(next->tokens);
      item.line = LineOf(next->begin);
      item.raw = src_.substr(next->begin, next->end - next->begin);
      if (item.tokens.empty()) {
        return absl::InvalidArgumentError(tok::Cat("line ", LineOf(next->begin), ": empty tag"));
      }
      items.push_back(std::move(item));
    }
    return items;
  }

 private:
  size_t FindTagOpen(size_t pos) const {
    while (true) {
      pos = src_.find('{', pos);
      if (pos == std::string::npos || pos + 1 >= src_.size()) return std::string::npos;
      const char c = src_[pos + 1];
      if (c == '{' || c == '%' || c == '#') return pos;
      ++pos;
    }
  }

  int LineOf(size_t offset) const {
    return 1 + static_cast<int>(std::count(src_.begin(), src_.begin() + offset, '\n'));
  }

  absl::StatusOr<RawTag> LexTag(size_t open) const {
    RawTag tag;
    tag.kind = src_[open + 1];
    tag.begin = open;
    size_t p = open + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) {
      (src_[p] == '-' ? tag.strip_before : tag.keep_before) = true;
      ++p;
    }
    if (tag.kind == '#') {
      const size_t close = src_.find("#}", p);
      if (close == std::string::npos) return Unclosed(open, "comment");
      if (close > p && (src_[close - 1] == '-' || src_[close - 1] == '+')) {
        (src_[close - 1] == '-' ? tag.strip_after : tag.keep_after) = true;
      }
      tag.end = close + 2;
      return tag;
    }
    const std::string_view closer = tag.kind == '%' ? "%}" : "}}";
    int braces = 0;  // dict literals' braces, so that `}}` inside one does not end the tag
    while (true) {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      if (p >= src_.size()) return Unclosed(open, tag.kind == '%' ? "statement" : "expression");
      if (braces == 0) {
        if (src_.compare(p, 2, closer) == 0) {
          tag.end = p + 2;
          return tag;
        }
        if ((src_[p] == '-' || src_[p] == '+') && src_.compare(p + 1, 2, closer) == 0) {
          (src_[p] == '-' ? tag.strip_after : tag.keep_after) = true;
          tag.end = p + 3;
          return tag;
        }
      }
      const char c = src_[p];
      if (c == '\'' || c == '"') {
        absl::StatusOr<size_t> next = LexString(p, &tag.tokens);
        if (!next.ok()) return next.status();
        p = *next;
      } else if (IsNameStart(c)) {
        size_t q = p;
        while (q < src_.size() && IsNameChar(src_[q])) ++q;
        tag.tokens.push_back({TokKind::kName, src_.substr(p, q - p)});
        p = q;
      } else if (IsDigit(c)) {
        size_t q = p;
        while (q < src_.size() && (IsDigit(src_[q]) || src_[q] == '_')) ++q;
        if (q + 1 < src_.size() && src_[q] == '.' && IsDigit(src_[q + 1])) {
          ++q;
          while (q < src_.size() && (IsDigit(src_[q]) || src_[q] == '_')) ++q;
        }
        tag.tokens.push_back({TokKind::kNumber, src_.substr(p, q - p)});
        p = q;
      } else {
        static constexpr std::string_view kTwoCharOps[] = {"**", "//", "==", "!=", "<=", ">="};
        std::string op;
        for (std::string_view two : kTwoCharOps) {
          if (src_.compare(p, 2, two) == 0) op = two;
        }
        if (op.empty()) {
          if (std::string_view("+-*/%~()[]{}.,:|<>=").find(c) == std::string_view::npos) {
            return absl::InvalidArgumentError(
                tok::Cat("line ", LineOf(p), ": unexpected character '", std::string(1, c), "'"));
          }
          op = std::string(1, c);
          if (c == '{') ++braces;
          if (c == '}' && --braces < 0) {
            return absl::InvalidArgumentError(tok::Cat("line ", LineOf(p), ": unbalanced '}'"));
          }
        }
        tag.tokens.push_back({TokKind::kOp, op});
        p += op.size();
      }
    }
  }

  // Decodes the escapes that templates use (\n \t \r \\ \' \"); any other makes the string
  // opaque (see JinjaToken).
  absl::StatusOr<size_t> LexString(size_t p, std::vector<JinjaToken>* out) const {
    const char quote = src_[p];
    JinjaToken t{TokKind::kString, ""};
    size_t q = p + 1;
    while (q < src_.size() && src_[q] != quote) {
      if (src_[q] == '\\' && q + 1 < src_.size()) {
        const char e = src_[q + 1];
        switch (e) {
          case 'n':
            t.text += '\n';
            break;
          case 't':
            t.text += '\t';
            break;
          case 'r':
            t.text += '\r';
            break;
          case '\\':
            t.text += '\\';
            break;
          case '\'':
            t.text += '\'';
            break;
          case '"':
            t.text += '"';
            break;
          default:
            t.opaque = true;
            t.text += src_.substr(q, 2);
        }
        q += 2;
      } else {
        t.text += src_[q++];
      }
    }
    if (q >= src_.size()) return Unclosed(p, "string");
    out->push_back(std::move(t));
    return q + 1;
  }

  absl::Status Unclosed(size_t offset, std::string_view what) const {
    return absl::InvalidArgumentError(tok::Cat("line ", LineOf(offset), ": unclosed ", what));
  }

  // The text src_[b, e) outputs between `prev` and `next` under HF's settings (trim_blocks,
  // lstrip_blocks) and the tags' own whitespace control.
  std::string OutputText(size_t b, size_t e, const RawTag* prev, const RawTag* next) const {
    const std::string_view t(src_.data() + b, e - b);
    size_t from = 0;
    size_t to = t.size();
    if (prev != nullptr && prev->strip_after) {
      while (from < to && IsSpace(t[from])) ++from;
    } else if (prev != nullptr && prev->kind != '{' && !prev->keep_after && !t.empty() &&
               t[0] == '\n') {
      from = 1;  // trim_blocks: the first newline after a block or comment tag
    }
    if (next != nullptr && next->strip_before) {
      while (to > from && IsSpace(t[to - 1])) --to;
    } else if (next != nullptr && next->kind != '{' && !next->keep_before) {
      // lstrip_blocks: spaces and tabs from the start of the line up to a block or comment tag.
      const size_t nl = t.rfind('\n');
      const size_t line_start = nl == std::string_view::npos ? 0 : nl + 1;
      const bool at_line_start = nl != std::string_view::npos || b == 0;
      const bool blank =
          line_start < t.size() && std::all_of(t.begin() + line_start, t.end(), IsSpace);
      if (at_line_start && blank) to = std::max(from, line_start);
    }
    return from < to ? std::string(t.substr(from, to - from)) : std::string();
  }

  // Spellings that Jinja evaluates alike become one: x['key'] -> x.key (for the dicts that
  // messages are), and adjacent string literals joined by `+` -> one literal (every operand
  // around them is a string, so regrouping the concatenation changes nothing).
  static std::vector<JinjaToken> Canonical(std::vector<JinjaToken> toks) {
    auto is_op = [&](size_t i, std::string_view op) {
      return i < toks.size() && toks[i].kind == TokKind::kOp && toks[i].text == op;
    };
    std::vector<JinjaToken> out;
    for (size_t i = 0; i < toks.size(); ++i) {
      const bool subscript_base =
          !out.empty() &&
          ((out.back().kind == TokKind::kName && !IsKeyword(out.back().text)) ||
           (out.back().kind == TokKind::kOp && (out.back().text == ")" || out.back().text == "]")));
      if (subscript_base && is_op(i, "[") && i + 2 < toks.size() &&
          toks[i + 1].kind == TokKind::kString && !toks[i + 1].opaque &&
          IsIdentifier(toks[i + 1].text) && is_op(i + 2, "]")) {
        out.push_back({TokKind::kOp, "."});
        out.push_back({TokKind::kName, toks[i + 1].text});
        i += 2;
        continue;
      }
      out.push_back(std::move(toks[i]));
    }
    // Operators that bind tighter than `+` (or are not string concatenation) on either side
    // keep the literals apart.
    auto tight = [](const JinjaToken& t) {
      static constexpr std::string_view kTight[] = {"*", "/", "//", "%", "**", "~",
                                                    "-", ".", "|",  "[", "("};
      return t.kind == TokKind::kOp &&
             std::find(std::begin(kTight), std::end(kTight), t.text) != std::end(kTight);
    };
    auto plain_string = [](const JinjaToken& t) { return t.kind == TokKind::kString && !t.opaque; };
    for (size_t i = 0; i + 2 < out.size();) {
      const bool joinable = plain_string(out[i]) && out[i + 1].kind == TokKind::kOp &&
                            out[i + 1].text == "+" && plain_string(out[i + 2]) &&
                            (i == 0 || (!tight(out[i - 1]) && out[i - 1].text != "(")) &&
                            (i + 3 >= out.size() || !tight(out[i + 3]));
      if (joinable) {
        out[i].text += out[i + 2].text;
        out.erase(out.begin() + i + 1, out.begin() + i + 3);
      } else {
        ++i;
      }
    }
    return out;
  }

  static bool IsKeyword(std::string_view name) {
    static constexpr std::string_view kKeywords[] = {"in", "and", "or", "not", "if", "else", "is"};
    return std::find(std::begin(kKeywords), std::end(kKeywords), name) != std::end(kKeywords);
  }

  std::string src_;
};

bool IsAny(const Item& item) {
  return item.kind == ItemKind::kStatement && item.tokens.size() == 1 &&
         item.tokens[0].text == kAnyBranch;
}

// Block structure of statements, for skipping an unconstrained branch.
enum class BlockRole { kOpen, kMiddle, kClose, kNone };

BlockRole RoleOf(const Item& item) {
  if (item.kind != ItemKind::kStatement || item.tokens[0].kind != TokKind::kName) {
    return BlockRole::kNone;
  }
  const std::string& kw = item.tokens[0].text;
  if (kw.starts_with("end")) return BlockRole::kClose;
  if (kw == "elif" || kw == "else") return BlockRole::kMiddle;
  static constexpr std::string_view kOpeners[] = {"if",     "for",        "macro",     "call",
                                                  "filter", "block",      "raw",       "with",
                                                  "trans",  "autoescape", "generation"};
  if (std::find(std::begin(kOpeners), std::end(kOpeners), kw) != std::end(kOpeners)) {
    return BlockRole::kOpen;
  }
  if (kw == "set") {  // `{% set x %}...{% endset %}` is a block; `{% set x = v %}` is not
    const bool assigns = std::any_of(item.tokens.begin(), item.tokens.end(), [](const auto& t) {
      return t.kind == TokKind::kOp && t.text == "=";
    });
    return assigns ? BlockRole::kNone : BlockRole::kOpen;
  }
  return BlockRole::kNone;
}

struct Capture {
  bool set = false;
  std::string value;
};

bool TokenMatches(const JinjaToken& pattern, const JinjaToken& t, Capture* capture) {
  if (pattern.kind != t.kind) return false;
  if (t.kind != TokKind::kString) return pattern.text == t.text;
  if (t.opaque) return false;
  const size_t marker = pattern.text.find(kCaptureMarker);
  if (marker == std::string::npos) return pattern.text == t.text;
  const std::string_view prefix = std::string_view(pattern.text).substr(0, marker);
  const std::string_view suffix =
      std::string_view(pattern.text).substr(marker + kCaptureMarker.size());
  const std::string_view s = t.text;
  if (s.size() < prefix.size() + suffix.size() || !s.starts_with(prefix) || !s.ends_with(suffix)) {
    return false;
  }
  std::string value(s.substr(prefix.size(), s.size() - prefix.size() - suffix.size()));
  if (capture->set && capture->value != value) return false;
  capture->set = true;
  capture->value = std::move(value);
  return true;
}

bool ItemMatches(const Item& pattern, const Item& item, Capture* capture) {
  if (pattern.kind != item.kind) return false;
  if (item.kind == ItemKind::kText) return pattern.text == item.text;
  if (pattern.tokens.size() != item.tokens.size()) return false;
  Capture trial = *capture;  // committed only when the whole item matches
  for (size_t i = 0; i < item.tokens.size(); ++i) {
    if (!TokenMatches(pattern.tokens[i], item.tokens[i], &trial)) return false;
  }
  *capture = std::move(trial);
  return true;
}

struct MatchOutcome {
  bool matched = false;
  size_t item = 0;     // the candidate item where matching stopped
  size_t pattern = 0;  // the known template's item expected there
  Capture capture;
};

MatchOutcome Match(const std::vector<Item>& pattern, const std::vector<Item>& items) {
  MatchOutcome m;
  size_t& i = m.item;
  size_t& k = m.pattern;
  while (k < pattern.size()) {
    if (IsAny(pattern[k])) {
      // Skip whole statements and blocks up to the item that follows the branch.
      const Item& follow = pattern[k + 1];
      int depth = 0;
      size_t j = i;
      for (; j < items.size(); ++j) {
        if (depth == 0 && ItemMatches(follow, items[j], &m.capture)) break;
        const BlockRole role = RoleOf(items[j]);
        if (role == BlockRole::kOpen) {
          ++depth;
        } else if (role == BlockRole::kClose) {
          if (depth == 0) break;
          --depth;
        } else if (role == BlockRole::kMiddle && depth == 0) {
          break;
        }
      }
      i = j;
      ++k;  // `follow` is matched (or reported) by the next iteration
      if (i >= items.size() || !ItemMatches(follow, items[i], &m.capture)) return m;
      ++i;
      ++k;
      continue;
    }
    if (i >= items.size() || !ItemMatches(pattern[k], items[i], &m.capture)) return m;
    ++i;
    ++k;
  }
  m.matched = i == items.size();
  return m;
}

bool AnyString(const std::vector<Item>& items, std::string_view needle) {
  for (const Item& item : items) {
    if (item.kind == ItemKind::kText && item.text.find(needle) != std::string::npos) return true;
    for (const JinjaToken& t : item.tokens) {
      if (t.kind == TokKind::kString && t.text.find(needle) != std::string::npos) return true;
    }
  }
  return false;
}

bool AnyName(const std::vector<Item>& items, std::string_view name) {
  for (const Item& item : items) {
    for (const JinjaToken& t : item.tokens) {
      if (t.kind == TokKind::kName && t.text == name) return true;
    }
  }
  return false;
}

// What the feature checks find missing or unsupported, or empty. These name the problem more
// plainly than the first difference from a known template would.
std::string UnsupportedFeature(const std::vector<Item>& items) {
  if (!AnyString(items, "<|im_start|>") || !AnyString(items, "<|im_end|>")) {
    return "not a ChatML template (it never writes <|im_start|> and <|im_end|>)";
  }
  if (AnyString(items, "<think>") || AnyString(items, "</think>") ||
      AnyName(items, "reasoning_content") || AnyName(items, "enable_thinking")) {
    return "uses <think> reasoning blocks (a Qwen3-style template), which jetserve does not render";
  }
  if (!AnyName(items, "messages")) return "never reads messages";
  if (!AnyName(items, "add_generation_prompt")) return "never reads add_generation_prompt";
  return "";
}

std::string SupportedList() {
  std::string names;
  for (const KnownTemplate* known : kKnownTemplates) {
    if (!names.empty()) names += ", ";
    names += known->name;
  }
  return names;
}

std::string Shown(const Item& item) {
  std::string raw = item.raw;
  const size_t marker = raw.find(kCaptureMarker);
  if (marker != std::string::npos) raw.replace(marker, kCaptureMarker.size(), "<system prompt>");
  return tok::Cat("`", Excerpt(raw), "`");
}

absl::Status NotRecognised(std::string_view source, std::string_view what) {
  return absl::FailedPreconditionError(
      tok::Cat(source, ": chat template not supported: ", what,
               ". jetserve renders only the ChatML templates it knows (", SupportedList(),
               "); put one of those in chat_template.jinja to serve this checkpoint"));
}

}  // namespace

absl::StatusOr<RecognizedChatTemplate> RecognizeChatTemplate(std::string_view jinja,
                                                             std::string_view source) {
  absl::StatusOr<std::vector<Item>> items = Lexer(jinja).Run();
  if (!items.ok()) {
    return NotRecognised(
        source, tok::Cat("cannot read it as Jinja (", std::string(items.status().message()), ")"));
  }
  if (std::string feature = UnsupportedFeature(*items); !feature.empty()) {
    return NotRecognised(source, feature);
  }

  std::string closest_diff;
  size_t closest_progress = 0;
  for (const KnownTemplate* known : kKnownTemplates) {
    absl::StatusOr<std::vector<Item>> pattern = Lexer(known->jinja).Run();
    if (!pattern.ok()) return absl::InternalError(pattern.status().message());
    const MatchOutcome m = Match(*pattern, *items);
    if (m.matched) {
      RecognizedChatTemplate out;
      out.name = known->name;
      out.has_default_system_prompt = m.capture.set;
      if (m.capture.set) {
        if (m.capture.value.empty()) {
          return NotRecognised(source, "its default system prompt is empty");
        }
        out.default_system_prompt = m.capture.value;
      }
      return out;
    }
    if (closest_diff.empty() || m.item > closest_progress) {
      closest_progress = m.item;
      const std::vector<Item>& p = *pattern;
      if (m.item >= items->size()) {
        closest_diff = tok::Cat("it ends where the ", known->name, " template continues with ",
                                Shown(p[m.pattern]));
      } else if (m.pattern >= p.size()) {
        closest_diff = tok::Cat("line ", (*items)[m.item].line, ": ", Shown((*items)[m.item]),
                                " follows the end of the ", known->name, " template");
      } else {
        closest_diff = tok::Cat("line ", (*items)[m.item].line, ": ", Shown((*items)[m.item]),
                                " where the ", known->name, " template has ", Shown(p[m.pattern]));
      }
    }
  }
  return NotRecognised(source,
                       tok::Cat("it differs from every known template; closest: ", closest_diff));
}

}  // namespace jetserve
