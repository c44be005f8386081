// Resolves the --model flag: a checkpoint directory, or the embedded default model when empty.
#ifndef JETSERVE_SERVER_MODEL_LOCATION_H_
#define JETSERVE_SERVER_MODEL_LOCATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/default_model.h"
#include "server/cli_args.h"

namespace jetserve {

inline absl::StatusOr<std::string> ResolveModelDir(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  return EnsureDefaultModel();
}

// A --model flag given but empty (an unset "$DIR" in a script) is an error, not a silent switch
// to the random-weight default model.
inline absl::Status CheckModelFlag(const CliArgs& args) {
  if (args.Has("model") && args.Get("model").empty()) {
    return absl::InvalidArgumentError(
        "--model is empty: give a checkpoint directory, or leave --model out for the embedded "
        "default model");
  }
  return absl::OkStatus();
}

// The same for a command's --model flag, checked.
inline absl::StatusOr<std::string> ResolveModelDir(const CliArgs& args) {
  if (absl::Status s = CheckModelFlag(args); !s.ok()) return s;
  return ResolveModelDir(args.Get("model"));
}

}  // namespace jetserve

#endif  // JETSERVE_SERVER_MODEL_LOCATION_H_
