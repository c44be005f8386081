// Paths the tests use: the source tree, the build tree, and the shared model files.
#ifndef JETSERVE_TESTS_TEST_PATHS_H_
#define JETSERVE_TESTS_TEST_PATHS_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace jetserve::testing {

inline std::string SourceDir() { return JETSERVE_SOURCE_DIR; }
inline std::string BinaryDir() { return JETSERVE_BINARY_DIR; }

// The shared model directory ($JETSERVE_SHARED_MODEL, else ../shared/model beside the repo).
inline std::string SharedModelDir() {
  if (const char* env = std::getenv("JETSERVE_SHARED_MODEL"); env != nullptr && *env != '\0') {
    return env;
  }
  return JETSERVE_SHARED_MODEL_DIR;
}

inline bool SharedModelAvailable() {
  return std::filesystem::exists(std::filesystem::path(SharedModelDir()) / "tokenizer.json");
}

// A fresh, empty directory under the build tree for one test's files. CTest runs every test
// case as its own process, several at once, so the directory is private to this process.
inline std::string ScratchDir(const std::string& name) {
  std::filesystem::path p = std::filesystem::path(BinaryDir()) / "test-scratch" /
                            (name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace jetserve::testing

// Skips the current test, saying why, when the shared model files are not there.
#define JETSERVE_REQUIRE_SHARED_MODEL()                                                         \
  if (!::jetserve::testing::SharedModelAvailable()) {                                           \
    GTEST_SKIP() << "shared model files not found at " << ::jetserve::testing::SharedModelDir() \
                 << " (set JETSERVE_SHARED_MODEL to the directory holding tokenizer.json)";     \
  }

#endif  // JETSERVE_TESTS_TEST_PATHS_H_
