// What `jetserve bench`'s CPU measurement (bench_command.cc) and its CUDA one (bench_cuda.cc)
// share: the options, and the cache arithmetic of one sequence.
#ifndef JETSERVE_SERVER_BENCH_OPTIONS_H_
#define JETSERVE_SERVER_BENCH_OPTIONS_H_

#include <algorithm>
#include <cstdint>
#include <string>

#include "engine/checkpoint/model_config.h"

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

// Bytes of cache one sequence holds at `context` positions, as HybridMemory lays it out: the
// jet state and conv tail fp32, the swa rings and attn KV at kv_element_bytes (4 on the CPU,
// 2 for the CUDA backend's bf16).
struct CacheCost {
  double fixed_bytes = 0;         // jet state + conv tail + swa rings
  double bytes_per_position = 0;  // attn KV
  int64_t page_size = 16;
  double BytesAt(int64_t context) const {
    const int64_t pages = (context + page_size - 1) / page_size;
    return fixed_bytes + bytes_per_position * static_cast<double>(pages * page_size);
  }
};

inline CacheCost CacheCostOf(const ModelConfig& c, double kv_element_bytes) {
  CacheCost cost;
  const JetConfig& j = c.jet;
  const double jet_floats = static_cast<double>(j.num_heads) * j.head_dim * j.value_head_dim +
                            static_cast<double>(j.conv_size - 1) * j.value_dim();
  const double kv_row = static_cast<double>(c.num_key_value_heads) * c.head_dim;
  cost.fixed_bytes =
      4.0 * c.num_layers_of(LayerType::kJet) * jet_floats +
      kv_element_bytes * c.num_layers_of(LayerType::kSwa) * 2.0 * c.swa_window_size * kv_row;
  cost.bytes_per_position = kv_element_bytes * c.num_layers_of(LayerType::kAttn) * 2.0 * kv_row;
  return cost;
}

// Cache bytes one decode step moves for one sequence at `context`: the jet state is read and
// written, the swa window and the attn KV read.
inline double CacheTrafficPerStep(const ModelConfig& c, int64_t context, double kv_element_bytes) {
  const JetConfig& j = c.jet;
  const double state = 4.0 * j.num_heads * j.head_dim * j.value_head_dim;
  const double kv_row = kv_element_bytes * c.num_key_value_heads * c.head_dim;
  const double window = std::min<double>(context, c.swa_window_size);
  return c.num_layers_of(LayerType::kJet) * 2.0 * state +
         c.num_layers_of(LayerType::kSwa) * 2.0 * window * kv_row +
         c.num_layers_of(LayerType::kAttn) * 2.0 * static_cast<double>(context) * kv_row;
}

}  // namespace jetserve

#endif  // JETSERVE_SERVER_BENCH_OPTIONS_H_
