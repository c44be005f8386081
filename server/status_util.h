// absl::Status <-> grpc::Status, and status code names for logs and metric labels. The two
// libraries number their codes identically (both follow google.rpc.Code).
#ifndef JETSERVE_SERVER_STATUS_UTIL_H_
#define JETSERVE_SERVER_STATUS_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace jetserve {

// The status a client may see. Errors of the server's own making (INTERNAL, UNKNOWN,
// DATA_LOSS) can carry file paths and other internals in their messages, so clients get a
// generic message with the same code; the server logs the original. Errors about the request
// itself keep their message: it describes the client's own input.
absl::Status ForClient(const absl::Status& s);

// A status for a client (ForClient), as gRPC's type.
inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  const absl::Status shown = ForClient(s);
  return grpc::Status(static_cast<grpc::StatusCode>(shown.code()), std::string(shown.message()));
}

// "INVALID_ARGUMENT", as gRPC tools print it.
std::string StatusCodeName(absl::StatusCode code);
inline std::string StatusCodeName(grpc::StatusCode code) {
  return StatusCodeName(static_cast<absl::StatusCode>(code));
}
// "invalid_argument", for metric labels.
std::string StatusCodeSnakeName(absl::StatusCode code);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_STATUS_UTIL_H_
