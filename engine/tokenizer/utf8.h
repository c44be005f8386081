// UTF-8 helpers shared by the tokenizer and the incremental detokenizer: strict validation,
// HF-compatible lossy decoding (Rust's String::from_utf8_lossy), and the GPT-2 byte <-> unicode
// mapping that byte-level BPE vocabularies are written in.
#ifndef JETSERVE_ENGINE_TOKENIZER_UTF8_H_
#define JETSERVE_ENGINE_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace jetserve::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

enum class SeqKind {
  kValid,       // a complete, well-formed character of `len` bytes
  kInvalid,     // `len` bytes (>= 1) that can never start a valid character: one U+FFFD
  kIncomplete,  // a valid prefix that runs off the end of the input; more bytes may complete it
};

struct Seq {
  SeqKind kind;
  size_t len;
};

// Classifies the sequence starting at p[0] (n >= 1 bytes available). Invalid sequences are
// "maximal subparts" (Unicode 15 §3.9, the WHATWG/Rust rule), so one U+FFFD replaces each.
Seq Classify(const unsigned char* p, size_t n);

// Returns the byte offset of the first ill-formed (or truncated) sequence, or npos if `s` is
// entirely valid UTF-8.
size_t FindInvalid(std::string_view s);

inline bool IsAscii(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

// Appends `bytes` to `out`, replacing each maximal invalid subpart (and a truncated tail) by
// U+FFFD. Same output as Rust's String::from_utf8_lossy and the WHATWG TextDecoder.
void AppendLossy(std::string_view bytes, std::string* out);

void AppendCodepoint(uint32_t cp, std::string* out);

// Decodes one code point from valid UTF-8 at `s[*pos]`, advancing *pos.
uint32_t DecodeCodepoint(std::string_view s, size_t* pos);

// GPT-2's reversible byte <-> printable-unicode mapping: printable Latin-1 bytes map to
// themselves, the other 68 bytes to U+0100.. in byte order.
uint32_t ByteToCodepoint(uint8_t b);
// Returns the byte for a mapped code point, or -1 when the code point is not in the mapping.
int CodepointToByte(uint32_t cp);

}  // namespace jetserve::utf8

#endif  // JETSERVE_ENGINE_TOKENIZER_UTF8_H_
