// The embedded default model: a small Jet-Nemotron-architecture checkpoint with RANDOM weights
// and a byte-level tokenizer, generated deterministically on first use so that jetserve runs
// out of the box. Its output is meaningless text; point --model at a real checkpoint for more.
#ifndef JETSERVE_ENGINE_DEFAULT_MODEL_H_
#define JETSERVE_ENGINE_DEFAULT_MODEL_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace jetserve {

// config.json of the default model.
std::string_view DefaultModelConfigJson();

// Returns the directory of the default model, creating it first if needed, under
// $JETSERVE_CACHE_DIR, else $XDG_CACHE_HOME/jetserve, else $HOME/.cache/jetserve.
// Safe against concurrent first use by several processes (built aside, then renamed).
absl::StatusOr<std::string> EnsureDefaultModel();

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_DEFAULT_MODEL_H_
