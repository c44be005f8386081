// The tokenizer.json `pre_tokenizer` stage for byte-level BPE: regex Split stages (PCRE2, the
// real pattern from the file with Unicode classes) followed by ByteLevel. The byte -> unicode
// remapping of ByteLevel is not done here: the BPE model works on raw bytes directly.
#ifndef JETSERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_
#define JETSERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

struct pcre2_real_code_8;
struct pcre2_real_match_context_8;

namespace jetserve {

// Qwen2's Split pattern (also used by our byte-level default tokenizer).
inline constexpr std::string_view kQwen2SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// GPT-2's pattern, used by ByteLevel when `use_regex` is true.
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Splits text with a PCRE2 pattern, "Isolated" behaviour: each match is a piece, and so is each
// non-empty gap between matches. Thread-safe: the compiled pattern is shared read-only, match
// data and the JIT stack are per thread.
class RegexSplitter {
 public:
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Create(std::string_view pattern,
                                                               bool literal, std::string_view what);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // `text` must be valid UTF-8 (the match skips PCRE2's own check, which would otherwise rescan
  // the whole subject at every match). Calls `fn` with each non-empty piece in order.
  absl::Status ForEachPiece(std::string_view text,
                            absl::FunctionRef<void(std::string_view)> fn) const;

 private:
  RegexSplitter() = default;
  pcre2_real_code_8* code_ = nullptr;
  pcre2_real_match_context_8* mcontext_ = nullptr;
};

class PreTokenizer {
 public:
  // Parses the `pre_tokenizer` field. Supported: ByteLevel, or a Sequence of Split stages
  // (behavior Isolated, invert false) ending in ByteLevel.
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& config,
                                               std::string_view source);

  // Calls `fn` with each pre-token (raw UTF-8 bytes) of `text` in order.
  absl::Status Split(std::string_view text, absl::FunctionRef<void(std::string_view)> fn) const;

 private:
  struct Stage {
    std::shared_ptr<RegexSplitter> splitter;  // null: no regex split at this stage
    bool add_prefix_space = false;            // ByteLevel's: prepend ' ' to each piece
  };
  absl::Status SplitFrom(size_t stage, std::string_view text,
                         absl::FunctionRef<void(std::string_view)> fn) const;

  std::vector<Stage> stages_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_
