#include "server/secret_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace jetserve {

absl::StatusOr<std::string> ReadSecretFile(const std::string& flag, const std::string& path,
                                           std::uintmax_t max_bytes) {
  auto error = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, ": ", why));
  };
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st)) return error("no such file");
  if (!std::filesystem::is_regular_file(st)) return error("not a regular file");
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return error(absl::StrCat("cannot stat it: ", ec.message()));
  if (size > max_bytes) return error(absl::StrCat("larger than ", max_bytes, " bytes"));
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return error(absl::StrCat("cannot open it: ", std::strerror(errno)));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return error("read error");
  return data;
}

}  // namespace jetserve
