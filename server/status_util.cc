#include "server/status_util.h"

#include "absl/strings/ascii.h"

namespace jetserve {

std::string StatusCodeName(absl::StatusCode code) {
  // absl's names are "INVALID_ARGUMENT" etc. except for kOk ("OK"): the gRPC spellings.
  return absl::StatusCodeToString(code);
}

std::string StatusCodeSnakeName(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace jetserve
