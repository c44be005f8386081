// String concatenation for error messages. Debian's Abseil is built with its own
// absl::string_view (not an alias of std::string_view), so absl::StrCat does not accept the
// std::string_view this module uses throughout; this helper does.
#ifndef JETSERVE_ENGINE_TOKENIZER_STR_UTIL_H_
#define JETSERVE_ENGINE_TOKENIZER_STR_UTIL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace jetserve::tok {

inline void AppendPiece(std::string* s, std::string_view v) { s->append(v); }
template <typename T>
requires std::is_integral_v<T>
void AppendPiece(std::string* s, T v) { s->append(std::to_string(v)); }

template <typename... Args>
std::string Cat(const Args&... args) {
  std::string s;
  (AppendPiece(&s, args), ...);
  return s;
}

// The largest token id a tokenizer may use. Tables are indexed by id, so an id near INT32_MAX
// would ask for billions of entries; real vocabularies stay far below (Qwen2.5: 151,665 ids).
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

// "SOURCE: field 'FIELD': WHAT", for a bad field of a tokenizer's JSON files.
inline absl::Status FieldError(std::string_view source, std::string_view field,
                               std::string_view what) {
  return absl::InvalidArgumentError(Cat(source, ": field '", field, "': ", what));
}

// For Abseil containers and hashing, which take absl::string_view.
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace jetserve::tok

#endif  // JETSERVE_ENGINE_TOKENIZER_STR_UTIL_H_
