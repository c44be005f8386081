// Streaming detokenisation: the concatenation of every Add() and the final Flush() equals
// Tokenizer::Decode of the same ids (same U+FFFD rule), but no delta ever ends mid-character.
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace jetserve {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::Add(int32_t id) {
  if (skip_special_ && tokenizer_->IsSpecial(id)) return "";
  std::string bytes = tokenizer_->TokenBytes(id);
  if (pending_.empty() && utf8::IsAscii(bytes)) return bytes;  // the common case: no copy
  pending_ += bytes;
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(pending_.data());
  const size_t n = pending_.size();
  size_t i = 0;
  while (i < n) {
    const utf8::Seq seq = utf8::Classify(p + i, n - i);
    if (seq.kind == utf8::SeqKind::kIncomplete) break;  // may still be completed: hold it back
    if (seq.kind == utf8::SeqKind::kValid) {
      out.append(pending_, i, seq.len);
    } else {
      out.append(utf8::kReplacement);  // can never become valid: replace now
    }
    i += seq.len;
  }
  pending_.erase(0, i);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  // What is left is one truncated character (at most 3 bytes), which lossy decoding turns into
  // a single U+FFFD.
  std::string out;
  utf8::AppendLossy(pending_, &out);
  pending_.clear();
  return out;
}

}  // namespace jetserve
