// Resolves the --model flag: a checkpoint directory, or the embedded default model when empty.
#ifndef JETSERVE_SERVER_MODEL_LOCATION_H_
#define JETSERVE_SERVER_MODEL_LOCATION_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/default_model.h"

namespace jetserve {

inline absl::StatusOr<std::string> ResolveModelDir(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  return EnsureDefaultModel();
}

}  // namespace jetserve

#endif  // JETSERVE_SERVER_MODEL_LOCATION_H_
