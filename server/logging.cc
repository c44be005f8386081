#include "server/logging.h"

#include <algorithm>
#include <memory>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/async.h"
#include "spdlog/formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace jetserve {
namespace {

// Separates the message from its fields (a JSON object) in a log record's payload, so that the
// formatter can emit the fields as JSON members. A control character never typed in a message.
constexpr char kFieldSeparator = '\x1f';

std::string Json(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string Timestamp(const spdlog::log_clock::time_point& t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromChrono(t), absl::UTCTimeZone());
}

// The fields part of a payload, or an empty object when there is none.
nlohmann::ordered_json Fields(std::string_view payload, size_t sep) {
  if (sep == std::string_view::npos) return nlohmann::ordered_json::object();
  nlohmann::ordered_json fields = nlohmann::ordered_json::parse(payload.substr(sep + 1), nullptr,
                                                                /*allow_exceptions=*/false);
  return fields.is_object() ? fields : nlohmann::ordered_json::object();
}

// One line per record: `TIME LEVEL message key=value ...` or a JSON object.
class LineFormatter final : public spdlog::formatter {
 public:
  explicit LineFormatter(bool json) : json_(json) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    const size_t sep = payload.find(kFieldSeparator);
    const std::string_view text = payload.substr(0, sep);
    const spdlog::string_view_t level_view = spdlog::level::to_string_view(msg.level);
    const std::string_view level(level_view.data(), level_view.size());
    const nlohmann::ordered_json fields = Fields(payload, sep);
    std::string line;
    if (json_) {
      nlohmann::ordered_json obj = {
          {"ts", Timestamp(msg.time)}, {"level", std::string(level)}, {"msg", std::string(text)}};
      for (const auto& [k, v] : fields.items()) obj[k] = v;
      line = Json(obj);
    } else {
      line = absl::StrCat(Timestamp(msg.time), " ", std::string(level), " ", std::string(text));
      for (const auto& [k, v] : fields.items()) {
        absl::StrAppend(&line, " ", std::string(k), "=", TextValue(v));
      }
    }
    line.push_back('\n');
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<LineFormatter>(json_);
  }

 private:
  // Strings bare when they are one word of printable characters, else quoted as JSON (which
  // escapes control characters: a client's request id with a CR or an ESC in it cannot forge
  // or garble a log line); everything else as JSON.
  static std::string TextValue(const nlohmann::ordered_json& v) {
    if (v.is_string()) {
      const std::string& s = v.get_ref<const std::string&>();
      const bool bare = !s.empty() && std::none_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f || c == '"' || c == '=';
      });
      if (bare) return s;
    }
    return Json(v);
  }

  bool json_;
};

}  // namespace

absl::Status InitLogging(const std::string& format, const std::string& level) {
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format: '", format, "' is not one of text, json"));
  }
  const spdlog::level::level_enum lvl = spdlog::level::from_str(level);
  // from_str maps unknown names to "off"; only "off" itself may mean that.
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--log-level: '", level, "' is not one of trace, debug, info, warn, error, critical, off"));
  }
  // 8192 queued lines, one writer thread; when full, the oldest line is dropped rather than
  // blocking the caller (the engine's step thread logs request completions).
  spdlog::init_thread_pool(8192, 1);
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::async_logger>(
      "jetserve", sink, spdlog::thread_pool(), spdlog::async_overflow_policy::overrun_oldest);
  logger->set_formatter(std::make_unique<LineFormatter>(format == "json"));
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

void LogEvent(spdlog::level::level_enum level, const std::string& message,
              const LogFields& fields) {
  if (!spdlog::default_logger_raw()->should_log(level)) return;
  if (fields.empty()) {
    spdlog::default_logger_raw()->log(level, "{}", message);
    return;
  }
  nlohmann::ordered_json obj = nlohmann::ordered_json::object();
  for (const auto& [k, v] : fields) obj[k] = v;
  spdlog::default_logger_raw()->log(level, "{}{}{}", message, kFieldSeparator, Json(obj));
}

void ShutdownLogging() {
  spdlog::default_logger_raw()->flush();
  spdlog::shutdown();
}

}  // namespace jetserve
