// The options of `jetserve bench`, shared by its CPU measurement (bench_command.cc) and its
// CUDA one (bench_cuda.cc).
#ifndef JETSERVE_SERVER_BENCH_OPTIONS_H_
#define JETSERVE_SERVER_BENCH_OPTIONS_H_

#include <cstdint>
#include <string>

namespace jetserve {

inline constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct BenchOptions {
  std::string model_dir;
  int64_t batch = 1;
  bool batch_auto = false;
  int64_t context = 1024;
  int64_t gen = 16;
  int64_t prompt_tokens = 0;  // prefill measurement; 0: skip
  int64_t prefill_chunk = 512;
  bool synthetic_fill = true;
  int64_t runs = 3;
  double budget_bytes = 16 * kGiB;
  int64_t probe_bytes = 256 << 20;
  bool probes = true;
  bool profile = false;  // --device cuda: device time per group of kernels
  uint64_t seed = 0;
};

}  // namespace jetserve

#endif  // JETSERVE_SERVER_BENCH_OPTIONS_H_
