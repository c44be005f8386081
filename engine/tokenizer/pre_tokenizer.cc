#include "engine/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <string>

#include "engine/tokenizer/str_util.h"

namespace jetserve {
namespace {

// Per-thread PCRE2 state. Match data only needs the whole-match pair; it is reused by every
// match on the thread (the splitter copies the offsets out before calling back, so nested
// splitters sharing it is fine).
struct ThreadPcre2 {
  pcre2_match_data* match_data = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadPcre2() {
    match_data = pcre2_match_data_create(1, nullptr);
    // Long runs (a megabyte of spaces) need more than the 32 KiB default JIT stack.
    jit_stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
  }
  ~ThreadPcre2() {
    pcre2_match_data_free(match_data);
    pcre2_jit_stack_free(jit_stack);
  }
};

ThreadPcre2& Pcre2ForThread() {
  thread_local ThreadPcre2 state;
  return state;
}

pcre2_jit_stack* JitStackCallback(void*) { return Pcre2ForThread().jit_stack; }

std::string Pcre2Error(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return tok::Cat("error ", code);
  return reinterpret_cast<const char*>(buf);
}

size_t Utf8CharLen(unsigned char b) {
  if (b < 0x80) return 1;
  if (b < 0xE0) return 2;
  if (b < 0xF0) return 3;
  return 4;
}

absl::Status Unsupported(std::string_view source, std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(tok::Cat(source, ": field '", field, "': ", what));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::Create(std::string_view pattern,
                                                                     bool literal,
                                                                     std::string_view what) {
  std::unique_ptr<RegexSplitter> s(new RegexSplitter());
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  if (literal) options |= PCRE2_LITERAL;
  s->code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                           &err, &err_offset, nullptr);
  if (s->code_ == nullptr) {
    return absl::InvalidArgumentError(
        tok::Cat(what, ": cannot compile regex at offset ", err_offset, ": ", Pcre2Error(err)));
  }
  // JIT is an optimisation only: if this platform lacks it, the interpreter gives the same
  // results, so a failure here is not an error.
  pcre2_jit_compile(s->code_, PCRE2_JIT_COMPLETE);
  s->mcontext_ = pcre2_match_context_create(nullptr);
  if (s->mcontext_ == nullptr) return absl::ResourceExhaustedError("pcre2_match_context_create");
  pcre2_jit_stack_assign(s->mcontext_, &JitStackCallback, nullptr);
  return s;
}

RegexSplitter::~RegexSplitter() {
  pcre2_match_context_free(mcontext_);
  pcre2_code_free(code_);
}

absl::Status RegexSplitter::ForEachPiece(std::string_view text,
                                         absl::FunctionRef<void(std::string_view)> fn) const {
  pcre2_match_data* md = Pcre2ForThread().match_data;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t prev = 0;  // end of the last piece handed out
  size_t pos = 0;   // where the next search starts
  while (pos < n) {
    const int rc = pcre2_match(code_, subject, n, pos, PCRE2_NO_UTF_CHECK, md, mcontext_);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(tok::Cat("pre-tokenizer regex failed: ", Pcre2Error(rc)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (start > prev) fn(text.substr(prev, start - prev));
    if (end > start) {
      fn(text.substr(start, end - start));
      prev = pos = end;
    } else {
      // An empty match splits nothing; step over one character and search again.
      prev = start;
      pos = start + Utf8CharLen(static_cast<unsigned char>(text[start]));
    }
  }
  if (prev < n) fn(text.substr(prev));
  return absl::OkStatus();
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& config,
                                                    std::string_view source) {
  PreTokenizer pt;
  if (!config.is_object()) {
    return Unsupported(source, "pre_tokenizer",
                       "a ByteLevel pre-tokenizer is required for byte-level BPE");
  }
  std::vector<std::pair<const nlohmann::json*, std::string>> steps;
  const std::string type = config.value("type", "");
  if (type == "Sequence") {
    if (!config.contains("pretokenizers") || !config["pretokenizers"].is_array()) {
      return Unsupported(source, "pre_tokenizer.pretokenizers", "missing or not an array");
    }
    for (size_t i = 0; i < config["pretokenizers"].size(); ++i) {
      steps.emplace_back(&config["pretokenizers"][i],
                         tok::Cat("pre_tokenizer.pretokenizers[", i, "]"));
    }
  } else {
    steps.emplace_back(&config, "pre_tokenizer");
  }
  bool saw_byte_level = false;
  for (const auto& [step_ptr, field] : steps) {
    const nlohmann::json& step = *step_ptr;
    const std::string step_type =
        step.is_object() && step.contains("type") && step["type"].is_string()
            ? step["type"].get<std::string>()
            : "";
    if (saw_byte_level) {
      return Unsupported(source, field, "stages after ByteLevel are not supported");
    }
    if (step_type == "Split") {
      if (step.value("behavior", "") != "Isolated") {
        return Unsupported(source, field + ".behavior",
                           tok::Cat("unsupported Split behavior '", step.value("behavior", ""),
                                    "' (supported: Isolated)"));
      }
      if (step.value("invert", false)) {
        return Unsupported(source, field + ".invert", "inverted Split is not supported");
      }
      const nlohmann::json pattern = step.value("pattern", nlohmann::json());
      std::string text;
      bool literal = false;
      if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
        text = pattern["Regex"].get<std::string>();
      } else if (pattern.is_object() && pattern.contains("String") &&
                 pattern["String"].is_string()) {
        text = pattern["String"].get<std::string>();
        literal = true;
      } else {
        return Unsupported(source, field + ".pattern",
                           "expected {\"Regex\": ...} or {\"String\": ...}");
      }
      absl::StatusOr<std::unique_ptr<RegexSplitter>> re =
          RegexSplitter::Create(text, literal, tok::Cat(source, ": field '", field, ".pattern'"));
      if (!re.ok()) return re.status();
      pt.stages_.push_back(Stage{std::shared_ptr<RegexSplitter>(std::move(*re)), false});
    } else if (step_type == "ByteLevel") {
      saw_byte_level = true;
      Stage stage;
      stage.add_prefix_space = step.value("add_prefix_space", false);
      if (step.value("use_regex", true)) {
        absl::StatusOr<std::unique_ptr<RegexSplitter>> re =
            RegexSplitter::Create(kGpt2SplitPattern, false, "GPT-2 ByteLevel regex");
        if (!re.ok()) return re.status();
        stage.splitter = std::move(*re);
      }
      pt.stages_.push_back(std::move(stage));
    } else {
      return Unsupported(source, field + ".type",
                         tok::Cat("unsupported pre-tokenizer '", step_type,
                                  "' (supported: Split, ByteLevel, Sequence of those)"));
    }
  }
  if (!saw_byte_level) {
    return Unsupported(source, "pre_tokenizer",
                       "a ByteLevel pre-tokenizer is required for byte-level BPE");
  }
  return pt;
}

absl::Status PreTokenizer::Split(std::string_view text,
                                 absl::FunctionRef<void(std::string_view)> fn) const {
  if (text.empty()) return absl::OkStatus();
  return SplitFrom(0, text, fn);
}

absl::Status PreTokenizer::SplitFrom(size_t stage, std::string_view text,
                                     absl::FunctionRef<void(std::string_view)> fn) const {
  if (stage == stages_.size()) {
    fn(text);
    return absl::OkStatus();
  }
  const Stage& st = stages_[stage];
  std::string prefixed;
  if (st.add_prefix_space && text.front() != ' ') {
    // HF's ByteLevel prepends the space to every piece that reaches it.
    prefixed = tok::Cat(" ", text);
    text = prefixed;
  }
  if (st.splitter == nullptr) return SplitFrom(stage + 1, text, fn);
  absl::Status inner = absl::OkStatus();
  absl::Status outer = st.splitter->ForEachPiece(text, [&](std::string_view piece) {
    if (inner.ok()) inner = SplitFrom(stage + 1, piece, fn);
  });
  return outer.ok() ? inner : outer;
}

}  // namespace jetserve
