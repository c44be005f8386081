#include "engine/tokenizer/utf8.h"

#include <array>

namespace jetserve::utf8 {
namespace {

bool IsCont(unsigned char c) { return (c & 0xC0) == 0x80; }

struct ByteMaps {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> to_byte{};  // mapped code points are all < 256 + 68
};

ByteMaps BuildByteMaps() {
  ByteMaps m;
  m.to_byte.fill(-1);
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const uint32_t cp = printable ? static_cast<uint32_t>(b) : next++;
    m.to_cp[b] = cp;
    m.to_byte[cp] = static_cast<int16_t>(b);
  }
  return m;
}

const ByteMaps& Maps() {
  static const ByteMaps maps = BuildByteMaps();
  return maps;
}

}  // namespace

Seq Classify(const unsigned char* p, size_t n) {
  const unsigned char b = p[0];
  if (b < 0x80) return {SeqKind::kValid, 1};
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;  // no overlongs
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;  // no overlongs
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {SeqKind::kInvalid, 1};  // stray continuation byte, C0/C1, or F5..FF
  }
  if (n < 2) return {SeqKind::kIncomplete, n};
  if (p[1] < lo || p[1] > hi) return {SeqKind::kInvalid, 1};
  for (size_t i = 2; i < len; ++i) {
    if (i >= n) return {SeqKind::kIncomplete, n};
    if (!IsCont(p[i])) return {SeqKind::kInvalid, i};
  }
  return {SeqKind::kValid, len};
}

size_t FindInvalid(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // Skip ASCII eight bytes at a time: most text is mostly ASCII.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const Seq seq = Classify(p + i, n - i);
    if (seq.kind != SeqKind::kValid) return i;
    i += seq.len;
  }
  return std::string_view::npos;
}

void AppendLossy(std::string_view bytes, std::string* out) {
  if (FindInvalid(bytes) == std::string_view::npos) {
    out->append(bytes);
    return;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const Seq seq = Classify(p + i, n - i);
    if (seq.kind == SeqKind::kValid) {
      out->append(bytes.data() + i, seq.len);
    } else {
      out->append(kReplacement);
    }
    i += seq.len;
  }
}

void AppendCodepoint(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t DecodeCodepoint(std::string_view s, size_t* pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *pos;
  const unsigned char b = p[0];
  if (b < 0x80) {
    *pos += 1;
    return b;
  }
  if (b < 0xE0) {
    *pos += 2;
    return ((b & 0x1Fu) << 6) | (p[1] & 0x3Fu);
  }
  if (b < 0xF0) {
    *pos += 3;
    return ((b & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
  }
  *pos += 4;
  return ((b & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
}

uint32_t ByteToCodepoint(uint8_t b) { return Maps().to_cp[b]; }

int CodepointToByte(uint32_t cp) {
  if (cp >= Maps().to_byte.size()) return -1;
  return Maps().to_byte[cp];
}

}  // namespace jetserve::utf8
