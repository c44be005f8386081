// The per-sequence memory of a hybrid model, composed per layer type from the pools that the
// layer pattern needs: state slots for jet layers, window rings for swa layers, paged KV for attn
// layers. Sized once at start-up; not thread-safe (the step thread owns it).
#ifndef JETSERVE_ENGINE_MEMORY_HYBRID_MEMORY_H_
#define JETSERVE_ENGINE_MEMORY_HYBRID_MEMORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/model_config.h"
#include "engine/memory/paged_kv.h"
#include "engine/memory/sequence_memory.h"
#include "engine/memory/state_slots.h"
#include "engine/memory/window_rings.h"

namespace jetserve {

struct MemoryOptions {
  int64_t max_seqs = 8;      // state slots and window rings: sequences that can run at once
  int64_t page_size = 16;    // positions per KV block
  int64_t kv_blocks = 0;     // KV blocks; 0: whatever budget_bytes leaves after slots and rings
  int64_t budget_bytes = 0;  // total for all pools; used when kv_blocks is 0
  // false: the pools only keep the books (which slot, ring and blocks each sequence holds) and
  // a device backend (MemoryObserver) keeps the contents, indexed the same way.
  bool host_storage = true;
  // Bytes per element of the KV pages and window rings as they are stored: 4 (fp32) on the
  // host; a device backend without host storage may keep them in bf16 (2), and then the same
  // budget_bytes holds twice the KV. The recurrent state is fp32 everywhere.
  int64_t kv_element_bytes = 4;
};

// Told about hand-outs and copies, so that storage kept elsewhere (device pools) follows the
// host bookkeeping: a slot handed out must read as zeros, a Fork copies contents.
class MemoryObserver {
 public:
  virtual ~MemoryObserver() = default;
  virtual void StateSlotHandedOut(int32_t slot) = 0;
  virtual void Forked(const SequenceMemory& from, const SequenceMemory& to, int64_t tokens) = 0;
};

// This machine's physical memory in bytes (0 when it cannot be told): host pools, which are
// allocated and zeroed at once, cannot be larger.
double PhysicalMemoryBytes();

class HybridMemory {
 public:
  static absl::StatusOr<std::unique_ptr<HybridMemory>> Create(const ModelConfig& config,
                                                              const MemoryOptions& options);

  // Units per pool (in the pools' order) set aside for sequences that do not exist yet: the
  // other choices of running n > 1 requests, made when their first choice finishes the prompt.
  using Pledge = std::vector<int64_t>;
  // Adds to `pledge` what `copies` new sequences holding [0, tokens) would take.
  void AddToPledge(int64_t tokens, int64_t copies, Pledge* pledge) const;

  // Whether every pool can give `seq` what it needs to hold positions [0, tokens), and as much
  // again to each of `copies - 1` new sequences (the other choices of an n > 1 request), and
  // still keep `pledged` (if any) free.
  bool CanReserve(const SequenceMemory& seq, int64_t tokens, int64_t copies = 1,
                  const Pledge* pledged = nullptr) const;
  // Gives `to` (holding nothing) room for [0, tokens) and copies `from`'s contents for those
  // positions: recurrent state, conv tail, window ring and KV. Requires CanReserve(to, tokens).
  void Fork(const SequenceMemory& from, SequenceMemory& to, int64_t tokens);
  // Grows `seq` in every pool. Requires CanReserve(seq, tokens).
  void Reserve(SequenceMemory& seq, int64_t tokens);
  // Returns everything `seq` holds to the pools.
  void Release(SequenceMemory& seq);

  struct NamedUsage {
    std::string name;
    PoolUsage usage;
  };
  std::vector<NamedUsage> Usage() const;
  // Bytes of all pools together.
  int64_t total_bytes() const;

  // Pools (nullptr when the layer pattern has no layer of that type).
  StateSlotPool* state_slots() { return state_slots_.get(); }
  WindowRingPool* window_rings() { return window_rings_.get(); }
  PagedKvPool* paged_kv() { return paged_kv_.get(); }
  void set_observer(MemoryObserver* observer) { observer_ = observer; }
  // Index of `layer` among the layers of its own type (its jet / swa / attn index).
  int64_t index_within_type(int layer) const { return index_within_type_[layer]; }

 private:
  HybridMemory() = default;
  std::vector<SequenceMemoryPool*> pools_;  // the non-null pools below
  std::unique_ptr<StateSlotPool> state_slots_;
  std::unique_ptr<WindowRingPool> window_rings_;
  std::unique_ptr<PagedKvPool> paged_kv_;
  std::vector<int64_t> index_within_type_;
  MemoryObserver* observer_ = nullptr;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_HYBRID_MEMORY_H_
