// Fixed per-sequence slots holding every jet layer's recurrent state and conv tail (fp32).
#ifndef JETSERVE_ENGINE_MEMORY_STATE_SLOTS_H_
#define JETSERVE_ENGINE_MEMORY_STATE_SLOTS_H_

#include <cstdint>

#include "engine/memory/fixed_unit_pool.h"

namespace jetserve {

struct StateSlotShape {
  int64_t jet_layers = 0;
  int64_t heads = 0;                                                           // Hj
  int64_t key_dim = 0;                                                         // Dk
  int64_t value_dim = 0;                                                       // Dv
  int64_t conv_size = 0;                                                       // W
  int64_t state_floats() const { return heads * key_dim * value_dim; }         // S per layer
  int64_t tail_floats() const { return (conv_size - 1) * heads * value_dim; }  // conv tail
  int64_t layer_floats() const { return state_floats() + tail_floats(); }
  int64_t slot_floats() const { return jet_layers * layer_floats(); }
};

class StateSlotPool : public FixedUnitPool {
 public:
  // Slots are zeroed when handed out: a new sequence starts from S = 0 and an all-zero conv
  // history, and nothing of the slot's previous owner can leak into it.
  StateSlotPool(const StateSlotShape& shape, int64_t num_slots, bool host_storage = true)
      : FixedUnitPool(&SequenceMemory::state_slot, num_slots, shape.slot_floats(),
                      /*zero_on_reserve=*/true, host_storage),
        shape_(shape) {}

  std::string_view name() const override { return "state_slots"; }

  float* state(int32_t slot, int64_t jet_layer) {  // [Hj, Dk, Dv]
    return unit(slot) + jet_layer * shape_.layer_floats();
  }
  float* conv_tail(int32_t slot, int64_t jet_layer) {  // [W-1, Hj*Dv]
    return state(slot, jet_layer) + shape_.state_floats();
  }
  const StateSlotShape& shape() const { return shape_; }

 private:
  StateSlotShape shape_;  // unit layout: [jet_layers, {S, conv tail}]
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_STATE_SLOTS_H_
