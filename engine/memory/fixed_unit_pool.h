// A pool of equal-sized, per-sequence units of memory (fp32 on the host): one unit per sequence,
// whatever its length. The state slots (jet) and window rings (swa) are both this, recorded in
// different fields of SequenceMemory.
#ifndef JETSERVE_ENGINE_MEMORY_FIXED_UNIT_POOL_H_
#define JETSERVE_ENGINE_MEMORY_FIXED_UNIT_POOL_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string_view>

#include "engine/memory/free_list.h"
#include "engine/memory/sequence_memory.h"

namespace jetserve {

class FixedUnitPool : public SequenceMemoryPool {
 public:
  int64_t UnitsNeeded(const SequenceMemory& seq, int64_t) const override {
    return seq.*field_ < 0 ? 1 : 0;
  }
  int64_t FreeUnits() const override { return free_.free(); }
  void Reserve(SequenceMemory& seq, int64_t) override {
    if (seq.*field_ >= 0) return;
    seq.*field_ = free_.Take();
    if (zero_on_reserve_ && data_ != nullptr) std::fill_n(unit(seq.*field_), unit_floats_, 0.0f);
  }
  void Release(SequenceMemory& seq) override {
    if (seq.*field_ < 0) return;
    free_.Give(seq.*field_);
    seq.*field_ = -1;
  }
  void CopyContents(const SequenceMemory& from, const SequenceMemory& to, int64_t) override {
    if (from.*field_ < 0 || to.*field_ < 0 || data_ == nullptr) return;
    std::copy_n(unit(from.*field_), unit_floats_, unit(to.*field_));
  }
  PoolUsage Usage() const override { return {free_.used(), free_.total()}; }
  int64_t bytes_per_unit() const override { return unit_floats_ * element_bytes_; }

 protected:
  // host_storage false: bookkeeping only (a device backend holds the contents, with
  // element_bytes per element: what bytes_per_unit counts).
  FixedUnitPool(int32_t SequenceMemory::*field, int64_t num_units, int64_t unit_floats,
                bool zero_on_reserve, bool host_storage = true, int64_t element_bytes = 4)
      : field_(field),
        unit_floats_(unit_floats),
        element_bytes_(host_storage ? 4 : element_bytes),
        zero_on_reserve_(zero_on_reserve),
        free_(num_units),
        data_(host_storage ? new float[num_units * unit_floats] : nullptr) {}
  float* unit(int32_t i) { return data_.get() + i * unit_floats_; }

 private:
  int32_t SequenceMemory::*field_;  // where a sequence records its unit
  int64_t unit_floats_;
  int64_t element_bytes_;  // 4 (fp32) with host storage
  bool zero_on_reserve_;
  FreeList free_;
  std::unique_ptr<float[]> data_;  // [num_units, unit_floats]; null without host storage
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_FIXED_UNIT_POOL_H_
