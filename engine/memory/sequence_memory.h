// One interface for per-sequence memory, implemented by each kind of cache a layer type needs:
// recurrent-state slots (jet), sliding-window rings (swa) and paged KV (attn). A sequence's
// SequenceMemory records what each pool has handed it; HybridMemory composes the pools that the
// model's layer pattern calls for. All storage is allocated when a pool is built, so admitting a
// sequence is a question of free units, never of malloc.
#ifndef JETSERVE_ENGINE_MEMORY_SEQUENCE_MEMORY_H_
#define JETSERVE_ENGINE_MEMORY_SEQUENCE_MEMORY_H_

#include <cstdint>
#include <string_view>
#include <vector>

namespace jetserve {

// What one sequence holds. Filled in by the pools; -1 / empty when not held.
struct SequenceMemory {
  int32_t state_slot = -1;         // jet recurrent state + conv tail, all jet layers
  int32_t window_ring = -1;        // swa rings, all swa layers
  std::vector<int32_t> kv_blocks;  // paged KV block table, all attn layers
};

struct PoolUsage {
  int64_t used = 0;   // units handed out
  int64_t total = 0;  // units in the pool
  double fraction() const { return total == 0 ? 0.0 : static_cast<double>(used) / total; }
};

class SequenceMemoryPool {
 public:
  virtual ~SequenceMemoryPool() = default;
  virtual std::string_view name() const = 0;
  // Units this pool must still hand `seq` for it to hold positions [0, tokens).
  virtual int64_t UnitsNeeded(const SequenceMemory& seq, int64_t tokens) const = 0;
  virtual int64_t FreeUnits() const = 0;
  // Grows `seq` to hold `tokens` positions. Requires UnitsNeeded(seq, tokens) <= FreeUnits().
  // Fixed-size memory (slots) is zeroed when handed out: nothing leaks between requests.
  virtual void Reserve(SequenceMemory& seq, int64_t tokens) = 0;
  // Returns everything `seq` holds from this pool.
  virtual void Release(SequenceMemory& seq) = 0;
  // Copies what `from` holds for positions [0, tokens) into `to`, which must already hold room
  // for them (a parallel sample starting from a shared prompt).
  virtual void CopyContents(const SequenceMemory& from, const SequenceMemory& to,
                            int64_t tokens) = 0;
  virtual PoolUsage Usage() const = 0;
  virtual int64_t bytes_per_unit() const = 0;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_SEQUENCE_MEMORY_H_
