#include "server/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/secret_file.h"

namespace jetserve {
namespace {

// Characters an HTTP header value can carry unchanged: printable ASCII without the space.
bool ValidKeyChar(char c) { return c > 0x20 && c < 0x7f; }

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view StripLeading(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  return s;
}

std::string_view Strip(std::string_view s) {
  s = StripLeading(s);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (absl::ascii_tolower(a[i]) != absl::ascii_tolower(b[i])) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseApiKeys(std::string_view text,
                                                      std::string_view what) {
  std::vector<std::string> keys;
  int line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const size_t end = std::min(text.find('\n'), text.size());
    const std::string_view line = Strip(text.substr(0, end));  // also the '\r' of CRLF files
    text.remove_prefix(std::min(end + 1, text.size()));
    if (line.empty() || line.front() == '#') continue;
    for (char c : line) {
      if (!ValidKeyChar(c)) {
        // The line may be a key with a typo: say where, not what.
        return absl::InvalidArgumentError(
            absl::StrCat(std::string(what), ": line ", line_number,
                         ": a key must be printable ASCII without spaces"));
      }
    }
    keys.emplace_back(line);
  }
  return keys;
}

std::optional<std::string_view> BearerToken(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer";
  authorization = Strip(authorization);
  if (authorization.size() <= kScheme.size() ||
      !EqualsIgnoreAsciiCase(authorization.substr(0, kScheme.size()), kScheme) ||
      authorization[kScheme.size()] != ' ') {
    return std::nullopt;
  }
  const std::string_view token = StripLeading(authorization.substr(kScheme.size()));
  if (token.empty()) return std::nullopt;
  return token;
}

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::string& file_path, const char* env_value) {
  std::vector<std::string> keys;
  if (!file_path.empty()) {
    absl::StatusOr<std::string> text = ReadSecretFile("api-key-file", file_path, 1 << 20);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::vector<std::string>> from_file =
        ParseApiKeys(*text, absl::StrCat("--api-key-file: ", file_path));
    if (!from_file.ok()) return from_file.status();
    if (from_file->empty()) {
      // Probably the wrong file; serving with no usable key would lock every client out.
      return absl::InvalidArgumentError(
          absl::StrCat("--api-key-file: ", file_path, ": no keys in it"));
    }
    keys = *std::move(from_file);
  }
  if (env_value != nullptr) {
    absl::StatusOr<std::vector<std::string>> from_env = ParseApiKeys(env_value, kApiKeyEnvVar);
    if (!from_env.ok()) return from_env.status();
    // An empty variable is most likely a Secret that did not resolve; refusing to start beats
    // silently serving without keys.
    if (from_env->size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(kApiKeyEnvVar, " is set but does not hold exactly one key"));
    }
    keys.push_back(std::move(from_env->front()));
  }
  return FromKeys(keys);
}

absl::StatusOr<ApiKeys> ApiKeys::FromKeys(const std::vector<std::string>& keys) {
  if (keys.empty()) return absl::InvalidArgumentError("no API keys");
  ApiKeys out;
  for (const std::string& key : keys) {
    if (key.empty()) return absl::InvalidArgumentError("an API key is empty");
    for (char c : key) {
      if (!ValidKeyChar(c)) {
        return absl::InvalidArgumentError("an API key must be printable ASCII without spaces");
      }
    }
    std::optional<Digest> digest = Hash(key);
    if (!digest.has_value()) return absl::InternalError("cannot hash the API keys");
    out.digests_.push_back(*digest);
  }
  return out;
}

std::optional<ApiKeys::Digest> ApiKeys::Hash(std::string_view key) {
  Digest digest{};
  unsigned int size = 0;
  if (EVP_Digest(key.data(), key.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 ||
      size != digest.size()) {
    return std::nullopt;  // out of memory, in practice
  }
  return digest;
}

bool ApiKeys::Matches(std::string_view key) const {
  const std::optional<Digest> presented = Hash(key);
  if (key.empty() || !presented.has_value()) return false;
  // Every key is compared, and the results are combined without branching on them.
  int mismatch_everywhere = 1;
  for (const Digest& d : digests_) {
    mismatch_everywhere &= CRYPTO_memcmp(presented->data(), d.data(), d.size()) != 0;
  }
  return mismatch_everywhere == 0;
}

bool ApiKeys::Authorizes(std::string_view authorization) const {
  const std::optional<std::string_view> token = BearerToken(authorization);
  return token.has_value() && Matches(*token);
}

}  // namespace jetserve
