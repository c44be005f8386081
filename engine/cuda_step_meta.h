// The metadata of one CUDA forward step (token ids, positions, row -> sequence map, the rows
// whose logits are wanted, per-layer sequence descriptors with their state / ring addresses,
// block tables), laid out in one buffer that the backend fills in pinned host memory and copies
// to the device in one piece. Host code only — no CUDA call — so the layout is unit-tested on
// machines without a GPU (tests/engine/cuda_step_meta_test.cc).
//
// Block tables go one of two ways. Whole (the default): every step carries every sequence's
// table. Incremental (JETSERVE_CUDA_TABLES=incremental, DevicePools::tables set): the tables
// live on the device, one row per state slot, and a step carries only the entries added since
// the row was last written, as (index, value) pairs the backend scatters into the rows before
// the step's kernels (at 64K context and batch 773, 13 MB of tables a step become a few KB).
//
// Two properties the backend relies on:
// - Every pointer written is a *device* address: the buffer's device copy base plus the
//   section's offset, or a pool address from DevicePools.
// - Fixed-size sections come first and the block tables (whose length grows with the contexts)
//   last, so for a given (tokens, sequences, rows) every section but the tables has the same
//   offset in every step: a CUDA graph captured for one decode step reads the right addresses
//   when it is replayed for another.
#ifndef JETSERVE_ENGINE_CUDA_STEP_META_H_
#define JETSERVE_ENGINE_CUDA_STEP_META_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/memory/state_slots.h"
#include "engine/memory/window_rings.h"
#include "engine/model.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sampling.h"

namespace jetserve {

// n rounded up to 16 bytes: every section of a metadata upload starts aligned (the kernels read
// some with 16-byte loads).
inline size_t Align16(size_t n) { return (n + 15) & ~size_t{15}; }

// The backend's device pools, indexed like HybridMemory's slots, rings and KV blocks. Each pool
// holds one spare unit past HybridMemory's count (index num_slots / num_rings / num_blocks) that
// padding sequences run on.
struct DevicePools {
  float* slots = nullptr;                  // [num_slots + 1, jet_layers, {S, conv tail}] fp32
  kernels::cuda::bf16_t* rings = nullptr;  // [num_rings + 1, swa_layers, {K, V}, window, Nkv, hd]
  StateSlotShape slot_shape;
  WindowRingShape ring_shape;
  int64_t num_slots = 0, num_rings = 0, num_blocks = 0;
  // Incremental block tables: [num_slots + 1, table_stride] on the device, row = the sequence's
  // state slot; the spare row num_slots holds [num_blocks] (the spare page) for padding. Null:
  // whole tables in every step.
  int32_t* tables = nullptr;
  int64_t table_stride = 0;
};

// What the device's table rows hold: per row, how many leading entries of its sequence's block
// table have been uploaded. A row is reset when its state slot is handed to a new sequence;
// between hand-outs a sequence's table only grows (HybridMemory appends pages and releases them
// all at once), so the entries past the uploaded count are exactly what the device lacks.
class BlockTableMirror {
 public:
  explicit BlockTableMirror(int64_t rows = 0) : uploaded_(rows, 0) {}
  int64_t rows() const { return static_cast<int64_t>(uploaded_.size()); }
  // The row's state slot went to a new sequence: its next step uploads the table whole.
  void Reset(int64_t row) {
    if (row >= 0 && row < rows()) uploaded_[row] = 0;
  }
  // The first entry of `table_size` the device lacks in `row` (0 if the table shrank, which
  // only a missed reset could cause: the row is then rewritten whole).
  int64_t FirstMissing(int64_t row, int64_t table_size) const {
    const int64_t have = uploaded_[row];
    return have <= table_size ? have : 0;
  }
  void MarkUploaded(int64_t row, int64_t table_size) { uploaded_[row] = table_size; }

 private:
  std::vector<int64_t> uploaded_;
};

// Sizes and byte offsets (16-byte aligned) of one step's metadata sections.
struct StepMetaLayout {
  int64_t tokens = 0;       // the batch's tokens + one per padding sequence
  int64_t seqs = 0;         // the batch's sequences + padding sequences
  int64_t rows = 0;         // logits rows, padding included
  int64_t real_rows = 0;    // logits rows of the batch's own sequences
  int64_t max_tokens = 0;   // the longest sequence's tokens in this step
  int64_t max_context = 0;  // the largest start_position + num_tokens
  int64_t table_ints = 0;   // whole tables: entries, the padding's shared [spare] included
  int64_t updates = 0;      // incremental tables: (index, value) pairs to scatter
  size_t ids = 0, positions = 0, token_seq = 0, last_rows = 0, jet = 0, swa = 0, attn = 0,
         sampling = 0, tables = 0;  // tables: the whole tables or the update pairs
  size_t bytes = 0;                 // the whole buffer
};

// Device addresses of the step's metadata, valid once the buffer has been copied.
struct StepMeta {
  int32_t* ids = nullptr;                             // [tokens]
  int32_t* positions = nullptr;                       // [tokens] absolute positions
  int32_t* token_seq = nullptr;                       // [tokens] -> sequence index
  int32_t* last_rows = nullptr;                       // [rows] -> token row of each logits row
  kernels::cuda::JetSeqDev* jet = nullptr;            // [jet_layers][seqs]
  kernels::cuda::AttnSeqDev* swa = nullptr;           // [swa_layers][seqs]
  kernels::cuda::AttnSeqDev* attn = nullptr;          // [seqs]
  kernels::cuda::SamplingRowDev* sampling = nullptr;  // [rows], greedy
  const int32_t* table_updates = nullptr;             // [updates, 2]: (index into rows, page)
  int64_t updates = 0;
  int64_t tokens = 0, seqs = 0, rows = 0, max_tokens = 0, max_context = 0;
  int64_t real_rows = 0;   // rows of the batch's own sequences (the rest is padding)
  int64_t swa_splits = 1;  // the swa layers' split-K (their keys end at the window); the
                           // backend sets it after planning
};

// Plans the buffer for `batch` padded to `pad_to` sequences (no padding when pad_to <= the
// batch's sequences): each padding sequence is one token at position 0 with greedy logits.
// The batch must already be validated (Model::Validate): every sequence has memory and
// num_tokens >= 1, and token_ids holds their tokens in order. With `mirror` (incremental
// tables), every sequence needs a state slot below mirror->rows() - 1 and a table of at most
// `table_stride` entries, else InvalidArgument.
absl::StatusOr<StepMetaLayout> PlanStepMeta(const ForwardBatch& batch, int64_t pad_to,
                                            int64_t jet_layers, int64_t swa_layers,
                                            const BlockTableMirror* mirror = nullptr,
                                            int64_t table_stride = 0);

// Writes the metadata into host[0, layout.bytes), every pointer expressed for the buffer's
// device copy at `device` (which is only used as an address, never dereferenced), and returns
// those device addresses. Sequences without a state slot or window ring (a model with no jet or
// swa layers) get unit 0, which no kernel then reads. Incremental tables (`mirror`, the one the
// layout was planned with; pools.tables set): writes the pairs and marks them uploaded.
StepMeta FillStepMeta(const ForwardBatch& batch, const StepMetaLayout& layout,
                      const DevicePools& pools, char* host, char* device,
                      BlockTableMirror* mirror = nullptr);

// The attention split count a step runs with, from the one ChooseAttentionSplits asks for:
// rounded up to 1, 2, 4, then four values per octave (5, 6, 7, 8, 10, 12, 14, 16, 20, ...). A
// decode graph is captured per split count, so the counts a growing context passes through must
// be few; and rounding up by at most 25% (above 4) keeps the decode kernel's splits near the
// 1,024 keys it is sized for (64K context: 65 -> 80 splits of ~820 keys, where powers of two
// made 128 of ~513).
int64_t GraphSplitCount(int64_t splits);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CUDA_STEP_META_H_
