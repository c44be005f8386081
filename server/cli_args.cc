#include "server/cli_args.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace jetserve {

void CliArgs::AddValue(const std::string& name, const std::string& help, const std::string& def) {
  flags_[name] = Flag{false, help, def};
}

void CliArgs::AddBool(const std::string& name, const std::string& help) {
  flags_[name] = Flag{true, help, ""};
}

absl::Status CliArgs::Parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (it->second.is_bool) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      values_[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    values_[name] = value;
  }
  return absl::OkStatus();
}

bool CliArgs::Has(const std::string& name) const {
  if (values_.count(name)) return true;
  auto it = flags_.find(name);
  return it != flags_.end() && !it->second.def.empty();
}

std::string CliArgs::Get(const std::string& name) const {
  if (auto it = values_.find(name); it != values_.end()) return it->second;
  auto f = flags_.find(name);
  return f == flags_.end() ? "" : f->second.def;
}

bool CliArgs::GetBool(const std::string& name) const { return Get(name) == "true"; }

absl::StatusOr<int64_t> CliArgs::GetInt(const std::string& name, int64_t min, int64_t max) const {
  const std::string s = Get(name);
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", s, "' is not an integer"));
  }
  if (v < min || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": ", v, " is outside [", min, ", ", max, "]"));
  }
  return static_cast<int64_t>(v);
}

absl::StatusOr<double> CliArgs::GetDouble(const std::string& name) const {
  const std::string s = Get(name);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", s, "' is not a finite number"));
  }
  return v;
}

absl::StatusOr<std::vector<int32_t>> CliArgs::GetIntList(const std::string& name) const {
  std::vector<int32_t> out;
  for (absl::string_view piece : absl::StrSplit(Get(name), ',')) {
    const std::string s(piece);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE || v < INT32_MIN || v > INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": '", s, "' is not an integer (expected e.g. 1,2,3)"));
    }
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}

std::string CliArgs::Usage() const {
  std::string out;
  for (const auto& [name, flag] : flags_) {
    absl::StrAppend(&out, "  --", name, flag.is_bool ? "" : " VALUE", "\n      ", flag.help);
    if (!flag.def.empty()) absl::StrAppend(&out, " (default: ", flag.def, ")");
    absl::StrAppend(&out, "\n");
  }
  return out;
}

int ReportUsageError(std::string_view command, const absl::Status& status, const CliArgs& args) {
  std::cerr << "jetserve " << command << ": " << status.message() << "\n\nflags:\n" << args.Usage();
  return 2;
}

int ReportFailure(std::string_view command, const absl::Status& status) {
  std::cerr << "jetserve " << command << ": " << status.message() << "\n";
  return 1;
}

std::chrono::system_clock::time_point DeadlineAfter(double seconds) {
  const double capped = std::min(seconds, 1e7);
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(std::llround(capped * 1e6)));
}

}  // namespace jetserve
