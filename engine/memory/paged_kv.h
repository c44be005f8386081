// Paged KV cache for the full-attention layers: fixed-size blocks of `page_size` positions,
// handed to sequences as their context grows; a sequence's block table lists its pages in order.
#ifndef JETSERVE_ENGINE_MEMORY_PAGED_KV_H_
#define JETSERVE_ENGINE_MEMORY_PAGED_KV_H_

#include <cstdint>
#include <memory>

#include "engine/memory/free_list.h"
#include "engine/memory/sequence_memory.h"

namespace jetserve {

struct PagedKvShape {
  int64_t attn_layers = 0;
  int64_t page_size = 16;  // positions per block
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t side_floats() const { return page_size * kv_heads * head_dim; }  // K or V, one layer
  int64_t block_floats() const { return attn_layers * 2 * side_floats(); }
};

class PagedKvPool : public SequenceMemoryPool {
 public:
  // host_storage false: bookkeeping only (a device backend holds the pages, with element_bytes
  // per element: bf16 pages 2). With host storage the pages are fp32.
  PagedKvPool(const PagedKvShape& shape, int64_t num_blocks, bool host_storage = true,
              int64_t element_bytes = 4);

  std::string_view name() const override { return "kv_blocks"; }
  int64_t UnitsNeeded(const SequenceMemory& seq, int64_t tokens) const override;
  int64_t FreeUnits() const override { return free_.free(); }
  void Reserve(SequenceMemory& seq, int64_t tokens) override;
  void Release(SequenceMemory& seq) override;
  void CopyContents(const SequenceMemory& from, const SequenceMemory& to, int64_t tokens) override;
  PoolUsage Usage() const override { return {free_.used(), free_.total()}; }
  int64_t bytes_per_unit() const override { return shape_.block_floats() * element_bytes_; }
  int64_t num_blocks() const { return num_blocks_; }

  // Layer-major storage so a kernel sees one layer's pages as [num_blocks, page_size, Nkv, hd].
  float* keys(int64_t attn_layer);
  float* values(int64_t attn_layer);
  const PagedKvShape& shape() const { return shape_; }

 private:
  PagedKvShape shape_;
  int64_t num_blocks_;
  int64_t element_bytes_;
  FreeList free_;
  std::unique_ptr<float[]> data_;  // [attn_layers, {K, V}, num_blocks, page_size, Nkv, hd]
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_PAGED_KV_H_
