#include "server/status_util.h"

#include "absl/strings/ascii.h"

namespace jetserve {

absl::Status ForClient(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return absl::Status(s.code(), "internal error; the server's log has the details");
    default:
      return s;
  }
}

std::string StatusCodeName(absl::StatusCode code) {
  // absl's names are "INVALID_ARGUMENT" etc. except for kOk ("OK"): the gRPC spellings.
  return absl::StatusCodeToString(code);
}

std::string StatusCodeSnakeName(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace jetserve
