// The device sampler's inputs for one SampleLast call (kernels/cuda/sampling.h), packed for one
// host-to-device copy: [SamplingRowDev × rows][int32 id lists][float bias values], each section
// on 16 bytes. Host code only — no CUDA call — so it is unit-tested on machines without a GPU
// (tests/engine/cuda_sample_arena_test.cc).
#ifndef JETSERVE_ENGINE_CUDA_SAMPLE_ARENA_H_
#define JETSERVE_ENGINE_CUDA_SAMPLE_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "kernels/cuda/sampling.h"

namespace jetserve {

class SampleArena {
 public:
  // Packs `specs` (one row each; several may sample one logits row). A spec's row must be one
  // of the `kept_rows` logits rows the last forward pass left (InvalidArgument otherwise).
  // Each row's lists: repetition_penalty != 1 → the distinct ids of prompt ∪ output (prompt
  // ids first, as SamplingContext::prompt_tokens holds them: sorted and distinct);
  // presence / frequency penalty != 0 → the output ids and, in the same order, their counts;
  // logit_bias → its ids and values; the context's banned ids.
  static absl::StatusOr<SampleArena> Pack(const std::vector<ForwardBackend::SampleSpec>& specs,
                                          int64_t kept_rows);

  int64_t rows() const { return static_cast<int64_t>(rows_.size()); }
  // The arena's size, and where the lists start in it.
  size_t bytes() const { return bytes_; }
  size_t ints_offset() const { return rows_bytes_; }
  size_t floats_offset() const { return rows_bytes_ + ints_bytes_; }
  // Writes the arena to `host` (bytes() long), with every row's list pointers set to where the
  // lists will be once it is copied to `device` (device addresses: device + their offset).
  void WriteTo(char* host, const char* device) const;
  // Row i's parameters as packed (list pointers null; see WriteTo).
  const kernels::cuda::SamplingRowDev& row(int64_t i) const { return rows_[i]; }

 private:
  struct ListOffsets {  // elements into ints_ (floats_ for bias_values)
    size_t rep = 0, out = 0, counts = 0, bias = 0, banned = 0, bias_values = 0;
  };
  std::vector<kernels::cuda::SamplingRowDev> rows_;
  std::vector<ListOffsets> lists_;
  std::vector<int32_t> ints_;
  std::vector<float> floats_;
  size_t rows_bytes_ = 0, ints_bytes_ = 0, bytes_ = 0;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CUDA_SAMPLE_ARENA_H_
