#include "engine/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include "engine/tokenizer/str_util.h"
#include "engine/tokenizer/utf8.h"

namespace jetserve {

absl::StatusOr<Normalizer> Normalizer::FromJson(const nlohmann::json& config,
                                                std::string_view source) {
  Normalizer n;
  if (config.is_null()) return n;
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    return absl::InvalidArgumentError(
        tok::Cat(source, ": field 'normalizer' must be null or an object with a 'type'"));
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "NFC") {
    UErrorCode err = U_ZERO_ERROR;
    n.nfc_ = icu::Normalizer2::getNFCInstance(err);
    if (U_FAILURE(err)) {
      return absl::InternalError(
          tok::Cat(source, ": ICU NFC normaliser unavailable: ", u_errorName(err)));
    }
    return n;
  }
  if (type == "Sequence" && config.contains("normalizers") && config["normalizers"].is_array()) {
    // A Sequence is fine as long as it composes to at most one NFC step.
    for (const auto& sub : config["normalizers"]) {
      absl::StatusOr<Normalizer> inner = FromJson(sub, source);
      if (!inner.ok()) return inner.status();
      if (inner->nfc_ != nullptr) n.nfc_ = inner->nfc_;
    }
    return n;
  }
  return absl::InvalidArgumentError(tok::Cat(source,
                                             ": field 'normalizer.type': unsupported normalizer '",
                                             type, "' (supported: null, NFC, Sequence of NFC)"));
}

std::string_view Normalizer::Normalize(std::string_view text, std::string* scratch) const {
  if (nfc_ == nullptr || utf8::IsAscii(text)) return text;  // ASCII is always NFC
  UErrorCode err = U_ZERO_ERROR;
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  if (nfc_->isNormalizedUTF8(piece, err) && U_SUCCESS(err)) return text;
  err = U_ZERO_ERROR;
  scratch->clear();
  scratch->reserve(text.size() + text.size() / 4);
  icu::StringByteSink<std::string> sink(scratch);
  nfc_->normalizeUTF8(0, piece, sink, nullptr, err);
  // Input was validated as UTF-8 before we got here, so ICU cannot fail on it; keep the text
  // unnormalised rather than lose it if it somehow does.
  if (U_FAILURE(err)) return text;
  return *scratch;
}

}  // namespace jetserve
