// The default model's byte-level tokenizer for the fuzz targets. It exists only as the files
// WriteByteLevelTokenizer writes: write them into a private temporary directory, load them and
// remove the directory again. Aborts (FUZZ_CHECK) if any step fails.
#ifndef JETSERVE_TESTS_FUZZ_BYTE_LEVEL_TOKENIZER_H_
#define JETSERVE_TESTS_FUZZ_BYTE_LEVEL_TOKENIZER_H_

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace jetserve::fuzz {

inline std::unique_ptr<Tokenizer> LoadByteLevelTokenizer() {
  std::string dir = (std::filesystem::temp_directory_path() / "jetserve-fuzz-XXXXXX").string();
  FUZZ_CHECK(mkdtemp(dir.data()) != nullptr, "mkdtemp");
  absl::Status written = WriteByteLevelTokenizer(dir);
  FUZZ_CHECK(written.ok(), written.ToString());
  auto tokenizer = Tokenizer::LoadFromDir(dir);
  std::filesystem::remove_all(dir);
  FUZZ_CHECK(tokenizer.ok(), tokenizer.status().ToString());
  return *std::move(tokenizer);
}

}  // namespace jetserve::fuzz

#endif  // JETSERVE_TESTS_FUZZ_BYTE_LEVEL_TOKENIZER_H_
