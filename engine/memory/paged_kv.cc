#include "engine/memory/paged_kv.h"

#include <algorithm>

namespace jetserve {

PagedKvPool::PagedKvPool(const PagedKvShape& shape, int64_t num_blocks, bool host_storage,
                         int64_t element_bytes)
    : shape_(shape),
      num_blocks_(num_blocks),
      element_bytes_(host_storage ? 4 : element_bytes),
      free_(num_blocks),
      data_(host_storage ? new float[num_blocks * shape.block_floats()] : nullptr) {}

int64_t PagedKvPool::UnitsNeeded(const SequenceMemory& seq, int64_t tokens) const {
  const int64_t blocks = (tokens + shape_.page_size - 1) / shape_.page_size;
  return std::max<int64_t>(0, blocks - static_cast<int64_t>(seq.kv_blocks.size()));
}

void PagedKvPool::Reserve(SequenceMemory& seq, int64_t tokens) {
  for (int64_t n = UnitsNeeded(seq, tokens); n > 0; --n) seq.kv_blocks.push_back(free_.Take());
}

void PagedKvPool::Release(SequenceMemory& seq) {
  for (int32_t b : seq.kv_blocks) free_.Give(b);
  seq.kv_blocks.clear();
}

void PagedKvPool::CopyContents(const SequenceMemory& from, const SequenceMemory& to,
                               int64_t tokens) {
  const size_t blocks =
      std::min<size_t>({from.kv_blocks.size(), to.kv_blocks.size(),
                        static_cast<size_t>((tokens + shape_.page_size - 1) / shape_.page_size)});
  if (data_ == nullptr) return;
  const int64_t side = shape_.side_floats();
  for (int64_t layer = 0; layer < shape_.attn_layers; ++layer) {
    for (float* base : {keys(layer), values(layer)}) {
      for (size_t i = 0; i < blocks; ++i) {
        std::copy_n(base + from.kv_blocks[i] * side, side, base + to.kv_blocks[i] * side);
      }
    }
  }
}

float* PagedKvPool::keys(int64_t attn_layer) {
  return data_.get() + attn_layer * 2 * num_blocks_ * shape_.side_floats();
}

float* PagedKvPool::values(int64_t attn_layer) {
  return keys(attn_layer) + num_blocks_ * shape_.side_floats();
}

}  // namespace jetserve
