// Fixed per-sequence rings holding the last `window` keys and values of every swa layer (fp32).
#ifndef JETSERVE_ENGINE_MEMORY_WINDOW_RINGS_H_
#define JETSERVE_ENGINE_MEMORY_WINDOW_RINGS_H_

#include <cstdint>
#include <memory>

#include "engine/memory/free_list.h"
#include "engine/memory/sequence_memory.h"

namespace jetserve {

struct WindowRingShape {
  int64_t swa_layers = 0;
  int64_t window = 0;                                                   // Wn positions
  int64_t kv_heads = 0;                                                 // Nkv
  int64_t head_dim = 0;                                                 // hd
  int64_t side_floats() const { return window * kv_heads * head_dim; }  // K or V of one layer
  int64_t ring_floats() const { return swa_layers * 2 * side_floats(); }
};

class WindowRingPool : public SequenceMemoryPool {
 public:
  WindowRingPool(const WindowRingShape& shape, int64_t num_rings);

  std::string_view name() const override { return "window_rings"; }
  int64_t UnitsNeeded(const SequenceMemory& seq, int64_t tokens) const override;
  int64_t FreeUnits() const override { return free_.free(); }
  // Rings need no zeroing: attention reads only positions the sequence itself wrote.
  void Reserve(SequenceMemory& seq, int64_t tokens) override;
  void Release(SequenceMemory& seq) override;
  PoolUsage Usage() const override { return {free_.used(), free_.total()}; }
  int64_t bytes_per_unit() const override { return shape_.ring_floats() * 4; }

  void CopyRing(int32_t from, int32_t to);
  float* keys(int32_t ring, int64_t swa_layer);    // [Wn, Nkv, hd]
  float* values(int32_t ring, int64_t swa_layer);  // [Wn, Nkv, hd]
  const WindowRingShape& shape() const { return shape_; }

 private:
  WindowRingShape shape_;
  FreeList free_;
  std::unique_ptr<float[]> data_;  // [num_rings, swa_layers, {K, V}, Wn, Nkv, hd]
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_WINDOW_RINGS_H_
