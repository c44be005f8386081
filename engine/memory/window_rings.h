// Fixed per-sequence rings holding the last `window` keys and values of every swa layer (fp32).
#ifndef JETSERVE_ENGINE_MEMORY_WINDOW_RINGS_H_
#define JETSERVE_ENGINE_MEMORY_WINDOW_RINGS_H_

#include <cstdint>

#include "engine/memory/fixed_unit_pool.h"

namespace jetserve {

struct WindowRingShape {
  int64_t swa_layers = 0;
  int64_t window = 0;                                                   // Wn positions
  int64_t kv_heads = 0;                                                 // Nkv
  int64_t head_dim = 0;                                                 // hd
  int64_t side_floats() const { return window * kv_heads * head_dim; }  // K or V of one layer
  int64_t ring_floats() const { return swa_layers * 2 * side_floats(); }
};

class WindowRingPool : public FixedUnitPool {
 public:
  // Rings need no zeroing: attention reads only positions the sequence itself wrote.
  // element_bytes: of the device copy when !host_storage (bf16 rings: 2).
  WindowRingPool(const WindowRingShape& shape, int64_t num_rings, bool host_storage = true,
                 int64_t element_bytes = 4)
      : FixedUnitPool(&SequenceMemory::window_ring, num_rings, shape.ring_floats(),
                      /*zero_on_reserve=*/false, host_storage, element_bytes),
        shape_(shape) {}

  std::string_view name() const override { return "window_rings"; }

  float* keys(int32_t ring, int64_t swa_layer) {  // [Wn, Nkv, hd]
    return unit(ring) + swa_layer * 2 * shape_.side_floats();
  }
  float* values(int32_t ring, int64_t swa_layer) {  // [Wn, Nkv, hd]
    return keys(ring, swa_layer) + shape_.side_floats();
  }
  const WindowRingShape& shape() const { return shape_; }

 private:
  WindowRingShape shape_;  // unit layout: [swa_layers, {K, V}, Wn, Nkv, hd]
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_WINDOW_RINGS_H_
