// Fixed per-sequence slots holding every jet layer's recurrent state and conv tail (fp32).
#ifndef JETSERVE_ENGINE_MEMORY_STATE_SLOTS_H_
#define JETSERVE_ENGINE_MEMORY_STATE_SLOTS_H_

#include <cstdint>
#include <memory>

#include "engine/memory/free_list.h"
#include "engine/memory/sequence_memory.h"

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

class StateSlotPool : public SequenceMemoryPool {
 public:
  StateSlotPool(const StateSlotShape& shape, int64_t num_slots);

  std::string_view name() const override { return "state_slots"; }
  int64_t UnitsNeeded(const SequenceMemory& seq, int64_t tokens) const override;
  int64_t FreeUnits() const override { return free_.free(); }
  void Reserve(SequenceMemory& seq, int64_t tokens) override;
  void Release(SequenceMemory& seq) override;
  PoolUsage Usage() const override { return {free_.used(), free_.total()}; }
  int64_t bytes_per_unit() const override { return shape_.slot_floats() * 4; }

  // Copies every layer's state and tail of one slot into another (parallel samples).
  void CopySlot(int32_t from, int32_t to);

  float* state(int32_t slot, int64_t jet_layer);      // [Hj, Dk, Dv]
  float* conv_tail(int32_t slot, int64_t jet_layer);  // [W-1, Hj*Dv]
  const StateSlotShape& shape() const { return shape_; }

 private:
  StateSlotShape shape_;
  FreeList free_;
  std::unique_ptr<float[]> data_;  // [num_slots, jet_layers, layer_floats]
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_STATE_SLOTS_H_
