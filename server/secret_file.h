// Reading the small files that hold TLS material and API keys. Errors name the flag and the path
// the operator gave, and never any of the file's content: start-up errors end up in logs and
// terminals that secrets must not.
#ifndef JETSERVE_SERVER_SECRET_FILE_H_
#define JETSERVE_SERVER_SECRET_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace jetserve {

// The bytes of the regular file at `path`, at most `max_bytes` of them (so that a mistaken
// /dev/zero cannot exhaust memory). `flag` (without dashes) prefixes every error message.
absl::StatusOr<std::string> ReadSecretFile(const std::string& flag, const std::string& path,
                                           std::uintmax_t max_bytes = std::uintmax_t{4} << 20);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_SECRET_FILE_H_
