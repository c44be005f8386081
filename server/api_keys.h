// API keys (`jetserve serve --api-key-file`, or $JETSERVE_API_KEY): requests must carry
// `authorization: Bearer KEY` (gRPC metadata or HTTP header) with one of the configured keys.
//
// The check must not reveal, through its timing, how much of a guess was right: the presented
// key and every configured key are compared as SHA-256 digests (fixed length, so neither a key's
// length nor a matching prefix changes the work) with OpenSSL's constant-time CRYPTO_memcmp,
// against every key without stopping at a match. Only digests are kept in memory.
#ifndef JETSERVE_SERVER_API_KEYS_H_
#define JETSERVE_SERVER_API_KEYS_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace jetserve {

// The environment variable that holds a key (serve: accepted key; client: key sent).
inline constexpr char kApiKeyEnvVar[] = "JETSERVE_API_KEY";

// The keys in a key file: one per line; surrounding whitespace is trimmed; blank lines and lines
// starting with '#' are skipped. A key must be printable ASCII without spaces (it travels in an
// HTTP header). Errors give line numbers, never the line. `what` names the source in errors.
absl::StatusOr<std::vector<std::string>> ParseApiKeys(std::string_view text, std::string_view what);

// The key of "Bearer KEY" (scheme case-insensitive, as RFC 7235 has it), or nullopt.
std::optional<std::string_view> BearerToken(std::string_view authorization);

class ApiKeys {
 public:
  // Keys from the file at `file_path` (if not empty) and from `env_value` (if not null; the
  // variable's value, one key). At least one key in all, or an error.
  static absl::StatusOr<ApiKeys> Load(const std::string& file_path, const char* env_value);
  // From keys already parsed; at least one, each valid as ParseApiKeys has it.
  static absl::StatusOr<ApiKeys> FromKeys(const std::vector<std::string>& keys);

  size_t size() const { return digests_.size(); }

  // Whether `key` is one of the keys, in time independent of `key`'s content and length.
  bool Matches(std::string_view key) const;
  // Whether an `authorization` value is "Bearer KEY" with a configured key.
  bool Authorizes(std::string_view authorization) const;

 private:
  using Digest = std::array<uint8_t, 32>;
  static std::optional<Digest> Hash(std::string_view key);
  std::vector<Digest> digests_;
};

}  // namespace jetserve

#endif  // JETSERVE_SERVER_API_KEYS_H_
