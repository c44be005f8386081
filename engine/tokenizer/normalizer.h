// The tokenizer.json `normalizer` stage. Qwen2.5 uses NFC; null means no normalisation.
#ifndef JETSERVE_ENGINE_TOKENIZER_NORMALIZER_H_
#define JETSERVE_ENGINE_TOKENIZER_NORMALIZER_H_

#include <unicode/uversion.h>

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

U_NAMESPACE_BEGIN
class Normalizer2;
U_NAMESPACE_END

namespace jetserve {

class Normalizer {
 public:
  // Parses the `normalizer` field (null, {"type": "NFC"}, or a Sequence of those). `source`
  // names the file for error messages.
  static absl::StatusOr<Normalizer> FromJson(const nlohmann::json& config, std::string_view source);

  // Returns `text` normalised. The result views either `text` itself (already normal, the common
  // case, no copy) or `*scratch`. `text` must be valid UTF-8.
  std::string_view Normalize(std::string_view text, std::string* scratch) const;

 private:
  const icu::Normalizer2* nfc_ = nullptr;  // owned by ICU; null: identity
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_TOKENIZER_NORMALIZER_H_
