// The device side of a HybridMemory: one device pool per kind of per-sequence memory, indexed
// like the host's (a sequence's state slot, window ring and KV blocks name the same units here),
// each with one spare unit past the host's count (index num_slots / num_rings / num_blocks)
// that padding sequences of a CUDA-graph bucket run on; plus, with incremental block tables,
// the tables' device rows (cuda_step_meta.h). Sized once, at AttachMemory; never reallocated,
// so captured graphs may hold the pools' addresses.
#ifndef JETSERVE_ENGINE_CUDA_POOLS_H_
#define JETSERVE_ENGINE_CUDA_POOLS_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/cuda_step_meta.h"
#include "engine/memory/hybrid_memory.h"
#include "engine/memory/paged_kv.h"
#include "engine/memory/sequence_memory.h"
#include "engine/memory/state_slots.h"
#include "engine/memory/window_rings.h"
#include "kernels/cuda/device_allocations.h"
#include "kernels/cuda/ops.h"

namespace jetserve {

class CudaPools {
 public:
  using bf16_t = kernels::cuda::bf16_t;

  // Destruction frees the pools: the owner's stream must have finished with them.
  CudaPools() = default;
  CudaPools(const CudaPools&) = delete;
  CudaPools& operator=(const CudaPools&) = delete;

  // Allocates and zeroes a device pool for each of `memory`'s pools, and the device block
  // tables when `incremental_tables` (taken only with state slots, whose index names a
  // sequence's table row, and while the tables' indices fit int32; a row holds
  // ceil(max_positions / page) entries). Synchronises the device. Once only.
  absl::Status Allocate(HybridMemory& memory, int64_t max_positions, bool incremental_tables);

  // A state slot handed to a new sequence: zeroed on `stream` (no state leaks from the slot's
  // previous sequence), its table row marked for a whole upload.
  absl::Status ZeroSlot(int32_t slot, cudaStream_t stream);
  // Copies `from`'s memory to `to` on `stream` (n > 1 choices): the state slot, the window
  // ring, and the KV pages holding the first `tokens` positions.
  absl::Status Copy(const SequenceMemory& from, const SequenceMemory& to, int64_t tokens,
                    cudaStream_t stream);

  // What the step metadata points into (FillStepMeta).
  DevicePools view() const;
  // The K and V pages of the attn layer with index `attn_index` among attn layers:
  // each [num_blocks + 1, page, Nkv, hd].
  std::pair<bf16_t*, bf16_t*> KvPages(int64_t attn_index) const;

  const StateSlotShape& slot_shape() const { return slot_shape_; }
  const WindowRingShape& ring_shape() const { return ring_shape_; }
  const PagedKvShape& kv_shape() const { return kv_shape_; }
  int64_t num_slots() const { return num_slots_; }
  int32_t* tables() const { return tables_; }  // null: whole tables in every step
  int64_t table_stride() const { return table_stride_; }
  BlockTableMirror& table_mirror() { return table_mirror_; }
  int64_t bytes() const { return bytes_; }  // device bytes of every pool

 private:
  // A zeroed device pool of `count` elements (at least one), counted in bytes_. The memset
  // runs on the legacy stream: Allocate synchronises the device before returning.
  template <typename T>
  absl::StatusOr<T*> AllocZeroed(int64_t count);

  kernels::cuda::DeviceAllocations memory_;
  int64_t bytes_ = 0;
  bool allocated_ = false;
  StateSlotShape slot_shape_;
  WindowRingShape ring_shape_;
  PagedKvShape kv_shape_;
  int64_t num_slots_ = 0, num_rings_ = 0, num_blocks_ = 0;
  float* slots_ = nullptr;     // [num_slots + 1, jet_layers, {S, conv tail}]
  bf16_t* rings_ = nullptr;    // [num_rings + 1, swa_layers, {K, V}, window, Nkv, hd]
  bf16_t* kv_ = nullptr;       // [attn_layers, {K, V}, num_blocks + 1, page, Nkv, hd]
  int32_t* tables_ = nullptr;  // [num_slots + 1, table_stride]
  int64_t table_stride_ = 0;
  int32_t* fork_pairs_ = nullptr;  // [fork_pairs_cap, {src, dst}]: Copy's KV page pairs
  int64_t fork_pairs_cap_ = 0;
  BlockTableMirror table_mirror_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CUDA_POOLS_H_
