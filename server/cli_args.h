// Command-line flags for jetserve's subcommands: `--name value` or `--name=value`, booleans as
// `--name`. Unknown flags, missing values and malformed numbers are errors that name the flag.
#ifndef JETSERVE_SERVER_CLI_ARGS_H_
#define JETSERVE_SERVER_CLI_ARGS_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace jetserve {

class CliArgs {
 public:
  // Declares a flag taking a value, with its help text and an optional default ("" = none).
  void AddValue(const std::string& name, const std::string& help, const std::string& def = "");
  // Declares a boolean flag.
  void AddBool(const std::string& name, const std::string& help);

  // Parses argv[first..argc).
  absl::Status Parse(int argc, char** argv, int first);

  bool Has(const std::string& name) const;  // given on the command line, or has a default
  std::string Get(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t min, int64_t max) const;
  absl::StatusOr<double> GetDouble(const std::string& name) const;
  // A comma-separated list of integers ("1,2,3").
  absl::StatusOr<std::vector<int32_t>> GetIntList(const std::string& name) const;

  // One line per flag, for --help.
  std::string Usage() const;

 private:
  struct Flag {
    bool is_bool = false;
    std::string help;
    std::string def;
  };
  std::map<std::string, Flag> flags_;
  std::map<std::string, std::string> values_;
};

// now + `seconds` (a --timeout flag's value, > 0). Anything past 1e7 s (~115 days) counts as
// 1e7 s: a huge value means "no deadline" instead of overflowing into one in the past.
std::chrono::system_clock::time_point DeadlineAfter(double seconds);

// A subcommand's two error exits, "jetserve COMMAND: message" on stderr: a usage error also
// lists the command's flags and returns exit status 2; a failure returns 1.
int ReportUsageError(std::string_view command, const absl::Status& status, const CliArgs& args);
int ReportFailure(std::string_view command, const absl::Status& status);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_CLI_ARGS_H_
