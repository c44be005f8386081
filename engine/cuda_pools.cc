#include "engine/cuda_pools.h"

#include <algorithm>
#include <vector>

#include "engine/status_macros.h"
#include "kernels/cuda/cuda_check.h"

namespace jetserve {

template <typename T>
absl::StatusOr<T*> CudaPools::AllocZeroed(int64_t count) {
  ASSIGN_OR_RETURN(T * p, memory_.Alloc<T>(count));
  CUDA_RETURN_IF_ERROR(cudaMemset(p, 0, count * sizeof(T)));
  bytes_ += count * static_cast<int64_t>(sizeof(T));
  return p;
}

absl::Status CudaPools::Allocate(HybridMemory& memory, int64_t max_positions,
                                 bool incremental_tables) {
  if (allocated_) return absl::FailedPreconditionError("CUDA pools allocated twice");
  allocated_ = true;
  if (StateSlotPool* s = memory.state_slots()) {
    slot_shape_ = s->shape();
    num_slots_ = s->Usage().total;
    ASSIGN_OR_RETURN(slots_, AllocZeroed<float>((num_slots_ + 1) * slot_shape_.slot_floats()));
  }
  if (WindowRingPool* r = memory.window_rings()) {
    ring_shape_ = r->shape();
    num_rings_ = r->Usage().total;
    ASSIGN_OR_RETURN(rings_, AllocZeroed<bf16_t>((num_rings_ + 1) * ring_shape_.ring_floats()));
  }
  if (PagedKvPool* kv = memory.paged_kv()) {
    kv_shape_ = kv->shape();
    num_blocks_ = kv->num_blocks();
    ASSIGN_OR_RETURN(kv_, AllocZeroed<bf16_t>((num_blocks_ + 1) * kv_shape_.block_floats()));
    // Device block tables need a row per state slot (every sequence has one in a model with jet
    // layers) and int32 indices.
    const int64_t page = kv_shape_.page_size;
    const int64_t stride = std::min<int64_t>((max_positions + page - 1) / page, num_blocks_);
    if (incremental_tables && slots_ != nullptr && stride > 0 &&
        (num_slots_ + 1) * stride < (int64_t{1} << 31)) {
      table_stride_ = stride;
      ASSIGN_OR_RETURN(tables_, AllocZeroed<int32_t>((num_slots_ + 1) * stride));
      // The spare row, for padding sequences: [the spare page].
      const int32_t spare_page = static_cast<int32_t>(num_blocks_);
      CUDA_RETURN_IF_ERROR(cudaMemcpy(tables_ + num_slots_ * stride, &spare_page, sizeof(int32_t),
                                      cudaMemcpyHostToDevice));
      table_mirror_ = BlockTableMirror(num_slots_ + 1);
    }
    // Room for one sequence's pages as fork copy pairs (Copy batches anything longer).
    fork_pairs_cap_ =
        std::max<int64_t>(1, std::min<int64_t>((max_positions + page - 1) / page, num_blocks_));
    ASSIGN_OR_RETURN(fork_pairs_, memory_.Alloc<int32_t>(2 * fork_pairs_cap_));
  }
  // The memsets ran on the legacy stream, which the backend's non-blocking stream does not
  // wait for.
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return absl::OkStatus();
}

absl::Status CudaPools::ZeroSlot(int32_t slot, cudaStream_t stream) {
  table_mirror_.Reset(slot);  // a new sequence: its block table is uploaded whole
  if (slots_ == nullptr) return absl::OkStatus();
  const int64_t n = slot_shape_.slot_floats();
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(slots_ + slot * n, 0, n * sizeof(float), stream));
  return absl::OkStatus();
}

absl::Status CudaPools::Copy(const SequenceMemory& from, const SequenceMemory& to, int64_t tokens,
                             cudaStream_t stream) {
  if (slots_ != nullptr && from.state_slot >= 0 && to.state_slot >= 0) {
    const int64_t n = slot_shape_.slot_floats();
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(slots_ + to.state_slot * n, slots_ + from.state_slot * n,
                                         n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
  }
  if (rings_ != nullptr && from.window_ring >= 0 && to.window_ring >= 0) {
    const int64_t n = ring_shape_.ring_floats();
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(rings_ + to.window_ring * n, rings_ + from.window_ring * n,
                                         n * sizeof(bf16_t), cudaMemcpyDeviceToDevice, stream));
  }
  if (kv_ != nullptr) {
    const size_t blocks = std::min<size_t>(
        {from.kv_blocks.size(), to.kv_blocks.size(),
         static_cast<size_t>((tokens + kv_shape_.page_size - 1) / kv_shape_.page_size)});
    // One launch for every layer's K and V pages (a copy call per page and layer stalled the
    // step thread for tens of ms on a long prompt), in batches of the pair buffer's capacity.
    // The pairs go up from pageable memory: the call returns once it has read them.
    std::vector<int32_t> pairs;  // [blocks, {src, dst}]
    pairs.reserve(2 * blocks);
    for (size_t i = 0; i < blocks; ++i) {
      pairs.push_back(from.kv_blocks[i]);
      pairs.push_back(to.kv_blocks[i]);
    }
    const int64_t page = kv_shape_.side_floats();  // elements of one page of K (or V)
    for (size_t done = 0; done < blocks;) {
      const size_t count = std::min<size_t>(blocks - done, static_cast<size_t>(fork_pairs_cap_));
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(fork_pairs_, pairs.data() + 2 * done,
                                           2 * count * sizeof(int32_t), cudaMemcpyHostToDevice,
                                           stream));
      RETURN_IF_ERROR(kernels::cuda::CopyPages(kv_, 2 * kv_shape_.attn_layers,
                                               (num_blocks_ + 1) * page, page, fork_pairs_,
                                               static_cast<int64_t>(count), stream));
      done += count;
    }
  }
  return absl::OkStatus();
}

DevicePools CudaPools::view() const {
  return {slots_,     rings_,      slot_shape_, ring_shape_,  num_slots_,
          num_rings_, num_blocks_, tables_,     table_stride_};
}

std::pair<CudaPools::bf16_t*, CudaPools::bf16_t*> CudaPools::KvPages(int64_t attn_index) const {
  const int64_t side = kv_shape_.side_floats() * (num_blocks_ + 1);  // K of one layer, elements
  bf16_t* k_pages = kv_ + attn_index * 2 * side;
  return {k_pages, k_pages + side};
}

}  // namespace jetserve
