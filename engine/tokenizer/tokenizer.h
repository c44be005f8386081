// HuggingFace tokenizer.json byte-level BPE, as used by Qwen2.5 (and so Jet-Nemotron):
// NFC normaliser, Split-regex pre-tokenizer, GPT-2 byte-to-unicode mapping, BPE merges by rank,
// added/special tokens matched in the raw text before anything else.
#ifndef JETSERVE_ENGINE_TOKENIZER_TOKENIZER_H_
#define JETSERVE_ENGINE_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace jetserve {

class Tokenizer {
 public:
  // Loads `<dir>/tokenizer.json` (and reads nothing else). Errors name the file and field.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromDir(const std::string& dir);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromJson(std::string_view json_text,
                                                                 std::string_view source);
  virtual ~Tokenizer() = default;

  // Encodes UTF-8 text. With allow_special, added-token text (e.g. "<|im_end|>") becomes its
  // token; without, it is tokenised as plain text. Invalid UTF-8 is an InvalidArgument error.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool allow_special) const = 0;

  // The raw bytes of one token (special tokens: their content). Empty for unknown ids.
  virtual std::string TokenBytes(int32_t id) const = 0;
  // Decodes ids to text; bytes that are not valid UTF-8 become U+FFFD, as HF does.
  // skip_special drops special tokens' text.
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const = 0;

  virtual int32_t vocab_size() const = 0;  // 1 + the largest id known (base + added)
  virtual bool IsSpecial(int32_t id) const = 0;
  // Id of an added/special token by its content, or -1.
  virtual int32_t TokenId(std::string_view token_content) const = 0;
};

// Turns a stream of token ids into text deltas that never split a UTF-8 character: bytes of an
// incomplete character are held back until the tokens completing it arrive.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special);
  // Adds one token; returns the text that is now complete (possibly empty).
  std::string Add(int32_t id);
  // Ends the stream: returns held-back bytes, incomplete characters as U+FFFD.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence
};

// Writes a byte-level tokenizer for the embedded default model into `dir`: tokenizer.json (256
// byte tokens, ids 0..255, no merges beyond those given, plus <|endoftext|>, <|im_start|>,
// <|im_end|>), tokenizer_config.json with the ChatML template. Readable by LoadFromDir and by HF.
absl::Status WriteByteLevelTokenizer(const std::string& dir);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_TOKENIZER_TOKENIZER_H_
