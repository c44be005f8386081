#include "engine/memory/state_slots.h"

#include <algorithm>

namespace jetserve {

StateSlotPool::StateSlotPool(const StateSlotShape& shape, int64_t num_slots)
    : shape_(shape), free_(num_slots), data_(new float[num_slots * shape.slot_floats()]) {}

int64_t StateSlotPool::UnitsNeeded(const SequenceMemory& seq, int64_t) const {
  return seq.state_slot < 0 ? 1 : 0;
}

void StateSlotPool::Reserve(SequenceMemory& seq, int64_t) {
  if (seq.state_slot >= 0) return;
  seq.state_slot = free_.Take();
  // A new sequence starts from S = 0 and an all-zero conv history.
  std::fill_n(data_.get() + seq.state_slot * shape_.slot_floats(), shape_.slot_floats(), 0.0f);
}

void StateSlotPool::Release(SequenceMemory& seq) {
  if (seq.state_slot < 0) return;
  free_.Give(seq.state_slot);
  seq.state_slot = -1;
}

void StateSlotPool::CopySlot(int32_t from, int32_t to) {
  const int64_t n = shape_.slot_floats();
  std::copy_n(data_.get() + from * n, n, data_.get() + to * n);
}

float* StateSlotPool::state(int32_t slot, int64_t jet_layer) {
  return data_.get() + slot * shape_.slot_floats() + jet_layer * shape_.layer_floats();
}

float* StateSlotPool::conv_tail(int32_t slot, int64_t jet_layer) {
  return state(slot, jet_layer) + shape_.state_floats();
}

}  // namespace jetserve
