#ifndef JETSERVE_ENGINE_CHECKPOINT_JSON_EXCERPT_H_
#define JETSERVE_ENGINE_CHECKPOINT_JSON_EXCERPT_H_

#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace jetserve {

// A JSON value as text for an error message, cut to about `max_chars`: a corrupt config or
// safetensors header can hold a value megabytes long, which must not become the message.
inline std::string JsonExcerpt(const nlohmann::json& value, size_t max_chars = 160) {
  std::string text =
      value.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
  if (text.size() <= max_chars) return text;
  const size_t total = text.size();
  text.resize(max_chars);  // ensure_ascii: every byte is a character
  return absl::StrCat(text, "... (", total, " characters)");
}

// A string from parsed JSON (valid UTF-8: a key, a tensor name), cut the same way at a character
// boundary.
inline std::string TextExcerpt(const std::string& text, size_t max_chars = 160) {
  if (text.size() <= max_chars) return text;
  size_t cut = max_chars;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(text.substr(0, cut), "... (", text.size(), " bytes)");
}

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CHECKPOINT_JSON_EXCERPT_H_
