// Shared pieces of the fuzz targets: an invariant check that aborts (so that libFuzzer, the
// sanitizers and the replay driver all treat a broken invariant as a crash, with the message),
// an independent UTF-8 validator used as the oracle for the tokenizer's, and a splitter that
// turns fuzz bytes into several fields.
#ifndef JETSERVE_TESTS_FUZZ_FUZZ_UTIL_H_
#define JETSERVE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

// libFuzzer's entry points; the replay driver (replay_main.cc) calls the same ones.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);

// Aborts with the failed condition and a message when an invariant does not hold. Not assert():
// the fuzz targets must check in every build type, NDEBUG or not.
#define FUZZ_CHECK(cond, msg)                                                                \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n  %s\n", __FILE__, __LINE__, #cond, \
                   std::string(msg).c_str());                                                \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

namespace jetserve::fuzz {

// Well-formed UTF-8 by the Unicode standard's table 3-7: no overlong forms, no surrogates, nothing
// above U+10FFFF, no truncated sequence. Written here rather than taken from engine/tokenizer so
// that the fuzz targets check the tokenizer against a second implementation.
inline bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return false;
    }
    if (i + len > n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    }
    i += len;
  }
  return true;
}

inline bool IsAscii(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

// Splits fuzz bytes at every occurrence of `sep` (a byte sequence unlikely inside a field, so
// that the fuzzer learns it from the seeds): "a<sep>b" -> {"a", "b"}.
inline std::vector<std::string_view> Split(std::string_view data, std::string_view sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t at = data.find(sep, start);
    if (at == std::string_view::npos) {
      out.push_back(data.substr(start));
      return out;
    }
    out.push_back(data.substr(start, at - start));
    start = at + sep.size();
  }
}

}  // namespace jetserve::fuzz

#endif  // JETSERVE_TESTS_FUZZ_FUZZ_UTIL_H_
