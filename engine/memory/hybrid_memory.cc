#include "engine/memory/hybrid_memory.h"

#include <unistd.h>

#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace jetserve {

double PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0 ? static_cast<double>(pages) * page_size : 0.0;
}

absl::StatusOr<std::unique_ptr<HybridMemory>> HybridMemory::Create(const ModelConfig& config,
                                                                   const MemoryOptions& options) {
  if (options.max_seqs < 1) return absl::InvalidArgumentError("max_seqs must be at least 1");
  if (options.page_size < 1) return absl::InvalidArgumentError("page_size must be at least 1");
  if (options.kv_element_bytes != 4 && (options.host_storage || options.kv_element_bytes != 2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_element_bytes must be 4 (fp32), or 2 (bf16) without host storage; got ",
                     options.kv_element_bytes));
  }
  const int64_t kv_bytes = options.kv_element_bytes;
  std::unique_ptr<HybridMemory> m(new HybridMemory());
  int64_t counts[3] = {0, 0, 0};
  for (LayerType t : config.layer_types) {
    m->index_within_type_.push_back(counts[static_cast<int>(t)]++);
  }
  const int64_t attn = counts[static_cast<int>(LayerType::kAttn)];
  const int64_t swa = counts[static_cast<int>(LayerType::kSwa)];
  const int64_t jet = counts[static_cast<int>(LayerType::kJet)];

  const StateSlotShape slot{jet, config.jet.num_heads, config.jet.head_dim,
                            config.jet.value_head_dim, config.jet.conv_size};
  const WindowRingShape ring{swa, config.swa_window_size, config.num_key_value_heads,
                             config.head_dim};
  const PagedKvShape page{attn, options.page_size, config.num_key_value_heads, config.head_dim};
  const int64_t fixed_bytes = options.max_seqs * ((jet > 0 ? 4 * slot.slot_floats() : 0) +
                                                  (swa > 0 ? kv_bytes * ring.ring_floats() : 0));
  int64_t blocks = options.kv_blocks;
  if (attn > 0 && blocks == 0) {
    if (options.budget_bytes <= fixed_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "memory budget of ", options.budget_bytes, " bytes leaves nothing for the KV cache: ",
          options.max_seqs, " sequences need ", fixed_bytes,
          " bytes of recurrent state and window rings alone; raise the budget or lower max_seqs"));
    }
    blocks = (options.budget_bytes - fixed_bytes) / (page.block_floats() * kv_bytes);
    if (blocks < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("memory budget too small for a single KV block of ",
                       page.block_floats() * kv_bytes, " bytes"));
    }
  }
  if (options.host_storage) {
    // Host pools are allocated and zeroed here: past the machine's memory that is a bad_alloc
    // or the OOM killer, so it is refused with the numbers instead.
    const double bytes = static_cast<double>(fixed_bytes) +
                         static_cast<double>(blocks) * page.block_floats() * kv_bytes;
    const double physical = PhysicalMemoryBytes();
    if (physical > 0 && bytes > physical) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the caches would take ", bytes / (1 << 30), " GiB of host memory; this machine has ",
          physical / (1 << 30), " GiB: lower the memory budget (serve --memory-gb)"));
    }
  }
  try {
    if (jet > 0) {
      m->state_slots_ =
          std::make_unique<StateSlotPool>(slot, options.max_seqs, options.host_storage);
      m->pools_.push_back(m->state_slots_.get());
    }
    if (swa > 0) {
      m->window_rings_ =
          std::make_unique<WindowRingPool>(ring, options.max_seqs, options.host_storage, kv_bytes);
      m->pools_.push_back(m->window_rings_.get());
    }
    if (attn > 0) {
      m->paged_kv_ = std::make_unique<PagedKvPool>(page, blocks, options.host_storage, kv_bytes);
      m->pools_.push_back(m->paged_kv_.get());
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "cannot allocate the caches' host memory: lower the memory budget (serve --memory-gb) "
        "or --max-seqs");
  }
  return m;
}

void HybridMemory::AddToPledge(int64_t tokens, int64_t copies, Pledge* pledge) const {
  const SequenceMemory fresh;
  pledge->resize(pools_.size(), 0);
  for (size_t i = 0; i < pools_.size(); ++i) {
    (*pledge)[i] += copies * pools_[i]->UnitsNeeded(fresh, tokens);
  }
}

bool HybridMemory::CanReserve(const SequenceMemory& seq, int64_t tokens, int64_t copies,
                              const Pledge* pledged) const {
  const SequenceMemory fresh;
  for (size_t i = 0; i < pools_.size(); ++i) {
    const SequenceMemoryPool* p = pools_[i];
    const int64_t held = pledged != nullptr && i < pledged->size() ? (*pledged)[i] : 0;
    const int64_t need = p->UnitsNeeded(seq, tokens) + (copies - 1) * p->UnitsNeeded(fresh, tokens);
    if (need + held > p->FreeUnits()) return false;
  }
  return true;
}

void HybridMemory::Fork(const SequenceMemory& from, SequenceMemory& to, int64_t tokens) {
  Reserve(to, tokens);
  for (SequenceMemoryPool* p : pools_) p->CopyContents(from, to, tokens);
  if (observer_ != nullptr) observer_->Forked(from, to, tokens);
}

void HybridMemory::Reserve(SequenceMemory& seq, int64_t tokens) {
  const int32_t slot_before = seq.state_slot;
  for (SequenceMemoryPool* p : pools_) p->Reserve(seq, tokens);
  if (observer_ != nullptr && slot_before < 0 && seq.state_slot >= 0) {
    observer_->StateSlotHandedOut(seq.state_slot);
  }
}

void HybridMemory::Release(SequenceMemory& seq) {
  for (SequenceMemoryPool* p : pools_) p->Release(seq);
}

std::vector<HybridMemory::NamedUsage> HybridMemory::Usage() const {
  std::vector<NamedUsage> out;
  for (const SequenceMemoryPool* p : pools_) out.push_back({std::string(p->name()), p->Usage()});
  return out;
}

int64_t HybridMemory::total_bytes() const {
  int64_t total = 0;
  for (const SequenceMemoryPool* p : pools_) total += p->Usage().total * p->bytes_per_unit();
  return total;
}

}  // namespace jetserve
