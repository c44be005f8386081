#include "engine/memory/window_rings.h"

#include <algorithm>

namespace jetserve {

WindowRingPool::WindowRingPool(const WindowRingShape& shape, int64_t num_rings)
    : shape_(shape), free_(num_rings), data_(new float[num_rings * shape.ring_floats()]) {}

int64_t WindowRingPool::UnitsNeeded(const SequenceMemory& seq, int64_t) const {
  return seq.window_ring < 0 ? 1 : 0;
}

void WindowRingPool::Reserve(SequenceMemory& seq, int64_t) {
  if (seq.window_ring < 0) seq.window_ring = free_.Take();
}

void WindowRingPool::Release(SequenceMemory& seq) {
  if (seq.window_ring < 0) return;
  free_.Give(seq.window_ring);
  seq.window_ring = -1;
}

void WindowRingPool::CopyRing(int32_t from, int32_t to) {
  const int64_t n = shape_.ring_floats();
  std::copy_n(data_.get() + from * n, n, data_.get() + to * n);
}

float* WindowRingPool::keys(int32_t ring, int64_t swa_layer) {
  return data_.get() + ring * shape_.ring_floats() + swa_layer * 2 * shape_.side_floats();
}

float* WindowRingPool::values(int32_t ring, int64_t swa_layer) {
  return keys(ring, swa_layer) + shape_.side_floats();
}

}  // namespace jetserve
