// absl::Status <-> grpc::Status, and status code names for logs and metric labels. The two
// libraries number their codes identically (both follow google.rpc.Code).
#ifndef JETSERVE_SERVER_STATUS_UTIL_H_
#define JETSERVE_SERVER_STATUS_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace jetserve {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
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
