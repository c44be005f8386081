// Fuzzes the tokenizer with arbitrary bytes, as text (Encode with special tokens honoured and
// not, then Decode) and as token ids (Decode, IncrementalDetokenizer). Both the byte-level
// tokenizer of the default model and, when the shared model files are there, the real Qwen2.5
// tokenizer (151k vocabulary, merges, added tokens) are exercised on every input.
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/fuzz/byte_level_tokenizer.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/test_paths.h"

namespace jetserve::fuzz {
namespace {

struct Tokenizers {
  std::unique_ptr<Tokenizer> byte_level;
  std::unique_ptr<Tokenizer> qwen;  // null without the shared model files
};

Tokenizers* Load() {
  auto* t = new Tokenizers();
  t->byte_level = LoadByteLevelTokenizer();

  const std::filesystem::path shared = testing::SharedModelDir();
  if (std::filesystem::exists(shared / "tokenizer.json")) {
    auto qwen = Tokenizer::LoadFromDir(shared.string());
    FUZZ_CHECK(qwen.ok(), qwen.status().ToString());
    t->qwen = *std::move(qwen);
  } else {
    std::fprintf(stderr, "tokenizer_fuzz: no %s/tokenizer.json; byte-level tokenizer only\n",
                 shared.c_str());
  }
  return t;
}

Tokenizers& Get() {
  static Tokenizers* t = Load();
  return *t;
}

// NFC of valid UTF-8 by ICU's C API: the text the tokenizer's normaliser must produce.
std::string Nfc(std::string_view text) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&err);
  int32_t len16 = 0;
  u_strFromUTF8(nullptr, 0, &len16, text.data(), static_cast<int32_t>(text.size()), &err);
  err = U_ZERO_ERROR;  // the preflight reports U_BUFFER_OVERFLOW_ERROR
  std::u16string in(len16, u'\0');
  u_strFromUTF8(reinterpret_cast<UChar*>(in.data()), len16, nullptr, text.data(),
                static_cast<int32_t>(text.size()), &err);
  FUZZ_CHECK(U_SUCCESS(err), "u_strFromUTF8");
  // NFC can expand (a composed character decomposes and recomposes differently) but not by more
  // than a factor of 3 in UTF-16 units.
  std::u16string out(in.size() * 3 + 16, u'\0');
  int32_t n = unorm2_normalize(
      nfc, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()),
      reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &err);
  FUZZ_CHECK(U_SUCCESS(err), "unorm2_normalize");
  int32_t len8 = 0;
  u_strToUTF8(nullptr, 0, &len8, reinterpret_cast<const UChar*>(out.data()), n, &err);
  err = U_ZERO_ERROR;
  std::string utf8(len8, '\0');
  u_strToUTF8(utf8.data(), len8, nullptr, reinterpret_cast<const UChar*>(out.data()), n, &err);
  FUZZ_CHECK(U_SUCCESS(err), "u_strToUTF8");
  return utf8;
}

void CheckEncode(const Tokenizer& tok, std::string_view text, bool byte_level) {
  const bool valid = IsValidUtf8(text);
  for (bool allow_special : {false, true}) {
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, allow_special);
    // Encode accepts exactly the well-formed UTF-8 inputs.
    FUZZ_CHECK(ids.ok() == valid,
               absl::StrCat("valid UTF-8: ", valid, ", Encode: ", ids.status().ToString()));
    if (!ids.ok()) {
      FUZZ_CHECK(ids.status().code() == absl::StatusCode::kInvalidArgument,
                 ids.status().ToString());
      continue;
    }
    FUZZ_CHECK(text.empty() == ids->empty(), "empty text <=> no tokens");
    for (int32_t id : *ids) {
      FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), absl::StrCat("id ", id));
      // Special-token text is plain text unless allowed.
      FUZZ_CHECK(allow_special || !tok.IsSpecial(id), absl::StrCat("special id ", id));
    }
    const std::string decoded = tok.Decode(*ids, /*skip_special=*/false);
    FUZZ_CHECK(IsValidUtf8(decoded), "Decode of Encode is valid UTF-8");
    // ASCII is its own NFC, so nothing may change on the way through.
    if (IsAscii(text)) FUZZ_CHECK(decoded == text, absl::StrCat("round trip: ", decoded));
    // Without special tokens the byte-level tokenizer normalises the whole text as one piece,
    // and its 256 byte tokens represent anything, so decoding gives back exactly the NFC text.
    if (byte_level && !allow_special) {
      FUZZ_CHECK(decoded == Nfc(text), absl::StrCat("NFC round trip: ", decoded));
    }
    const std::string skipped = tok.Decode(*ids, /*skip_special=*/true);
    FUZZ_CHECK(IsValidUtf8(skipped), "Decode(skip_special) is valid UTF-8");
    if (!allow_special) FUZZ_CHECK(skipped == decoded, "nothing special to skip");
  }
}

// Token ids from the bytes: every id of the vocabulary, plus a few unknown and negative ones.
std::vector<int32_t> IdsFrom(std::string_view data, int32_t vocab_size, int bytes_per_id) {
  std::vector<int32_t> ids;
  const uint32_t span = static_cast<uint32_t>(vocab_size) + 8;
  for (size_t i = 0; i + bytes_per_id <= data.size(); i += bytes_per_id) {
    uint32_t v = 0;
    for (int k = 0; k < bytes_per_id; ++k) v = (v << 8) | static_cast<uint8_t>(data[i + k]);
    ids.push_back(static_cast<int32_t>(v % span) - 4);
  }
  return ids;
}

void CheckDecode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (bool skip_special : {false, true}) {
    const std::string text = tok.Decode(ids, skip_special);
    FUZZ_CHECK(IsValidUtf8(text), "Decode is valid UTF-8");
    // The detokenizer's contract: every delta is whole characters, and all of them together
    // equal Decode of the same ids.
    IncrementalDetokenizer detok(&tok, skip_special);
    std::string streamed;
    for (int32_t id : ids) {
      std::string delta = detok.Add(id);
      FUZZ_CHECK(IsValidUtf8(delta), absl::StrCat("delta after id ", id));
      streamed += delta;
    }
    std::string tail = detok.Flush();
    FUZZ_CHECK(IsValidUtf8(tail), "Flush");
    streamed += tail;
    FUZZ_CHECK(streamed == text, absl::StrCat("streamed '", streamed, "' != decoded '", text, "'"));
  }
}

}  // namespace
}  // namespace jetserve::fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  jetserve::fuzz::Get();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace jetserve::fuzz;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Tokenizers& t = Get();
  CheckEncode(*t.byte_level, bytes, /*byte_level=*/true);
  CheckDecode(*t.byte_level, IdsFrom(bytes, t.byte_level->vocab_size(), 2));
  if (t.qwen != nullptr) {
    CheckEncode(*t.qwen, bytes, /*byte_level=*/false);
    CheckDecode(*t.qwen, IdsFrom(bytes, t.qwen->vocab_size(), 3));
  }
  return 0;
}
