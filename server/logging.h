// Structured logging for the server: spdlog to stderr, as text lines or one JSON object per
// line, with key/value fields (request ids, token counts) that stay fields in JSON.
// The logger is asynchronous and drops the oldest lines when full, so a log call never blocks;
// that makes it safe on the engine's step thread, which must not block.
#ifndef JETSERVE_SERVER_LOGGING_H_
#define JETSERVE_SERVER_LOGGING_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "spdlog/common.h"

namespace jetserve {

using LogFields = std::vector<std::pair<std::string, nlohmann::ordered_json>>;

// Installs the default logger. `format`: "text" or "json"; `level`: trace, debug, info, warn,
// error, critical or off. Errors name the flag.
absl::Status InitLogging(const std::string& format, const std::string& level);

// Logs `message` with `fields`: text "... message key=value ...", JSON
// {"ts":..., "level":..., "msg": message, "key": value, ...}.
void LogEvent(spdlog::level::level_enum level, const std::string& message,
              const LogFields& fields = {});

// Flushes and stops the logger; call once before exit.
void ShutdownLogging();

}  // namespace jetserve

#endif  // JETSERVE_SERVER_LOGGING_H_
