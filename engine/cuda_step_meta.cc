#include "engine/cuda_step_meta.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/memory/sequence_memory.h"

namespace jetserve {

namespace kg = kernels::cuda;

absl::StatusOr<StepMetaLayout> PlanStepMeta(const ForwardBatch& batch, int64_t pad_to,
                                            int64_t jet_layers, int64_t swa_layers,
                                            const BlockTableMirror* mirror, int64_t table_stride) {
  StepMetaLayout m;
  const int64_t real_seqs = static_cast<int64_t>(batch.seqs.size());
  const int64_t pad = std::max<int64_t>(0, pad_to - real_seqs);
  m.seqs = real_seqs + pad;
  m.tokens = static_cast<int64_t>(batch.token_ids.size()) + pad;
  for (const BatchSequence& s : batch.seqs) {
    m.rows += s.all_logits ? s.num_tokens : 1;
    m.max_tokens = std::max(m.max_tokens, s.num_tokens);
    m.max_context = std::max(m.max_context, s.start_position + s.num_tokens);
    const int64_t blocks = static_cast<int64_t>(s.memory->kv_blocks.size());
    if (mirror == nullptr) {
      m.table_ints += blocks;
      continue;
    }
    const int64_t row = s.memory->state_slot;
    if (row < 0 || row >= mirror->rows() - 1 || blocks > table_stride) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device block tables: a sequence with state slot ", row, " (rows ", mirror->rows() - 1,
          ") and ", blocks, " KV blocks (at most ", table_stride, ")"));
    }
    m.updates += blocks - mirror->FirstMissing(row, blocks);
  }
  m.real_rows = m.rows;
  m.rows += pad;
  if (pad > 0) {
    m.max_tokens = std::max<int64_t>(m.max_tokens, 1);
    m.max_context = std::max<int64_t>(m.max_context, 1);
    // The padding sequences share one table, [spare page]: in the step or the spare row.
    if (mirror == nullptr) m.table_ints += 1;
  }
  size_t off = 0;
  auto take = [&](int64_t count, size_t element_bytes) {
    const size_t at = off;
    off += Align16(static_cast<size_t>(count) * element_bytes);
    return at;
  };
  m.ids = take(m.tokens, sizeof(int32_t));
  m.positions = take(m.tokens, sizeof(int32_t));
  m.token_seq = take(m.tokens, sizeof(int32_t));
  m.last_rows = take(m.rows, sizeof(int32_t));
  m.jet = take(jet_layers * m.seqs, sizeof(kg::JetSeqDev));
  m.swa = take(swa_layers * m.seqs, sizeof(kg::AttnSeqDev));
  m.attn = take(m.seqs, sizeof(kg::AttnSeqDev));
  m.sampling = take(m.rows, sizeof(kg::SamplingRowDev));
  // Last: its length varies step to step.
  m.tables = mirror == nullptr ? take(m.table_ints, sizeof(int32_t))
                               : take(2 * m.updates, sizeof(int32_t));
  m.bytes = off;
  return m;
}

StepMeta FillStepMeta(const ForwardBatch& batch, const StepMetaLayout& layout,
                      const DevicePools& pools, char* host, char* device,
                      BlockTableMirror* mirror) {
  const bool incremental = mirror != nullptr;  // pools.tables is then the device rows
  const StateSlotShape& ss = pools.slot_shape;
  const WindowRingShape& rs = pools.ring_shape;
  auto* ids = reinterpret_cast<int32_t*>(host + layout.ids);
  auto* pos = reinterpret_cast<int32_t*>(host + layout.positions);
  auto* tok = reinterpret_cast<int32_t*>(host + layout.token_seq);
  auto* last = reinterpret_cast<int32_t*>(host + layout.last_rows);
  auto* tables = reinterpret_cast<int32_t*>(host + layout.tables);
  auto* jet = reinterpret_cast<kg::JetSeqDev*>(host + layout.jet);
  auto* swa = reinterpret_cast<kg::AttnSeqDev*>(host + layout.swa);
  auto* attn = reinterpret_cast<kg::AttnSeqDev*>(host + layout.attn);
  auto* samp = reinterpret_cast<kg::SamplingRowDev*>(host + layout.sampling);
  const auto* d_tables = reinterpret_cast<const int32_t*>(device + layout.tables);
  const int64_t seqs = layout.seqs;
  std::copy(batch.token_ids.begin(), batch.token_ids.end(), ids);
  int64_t row = 0, out_row = 0, table_at = 0;
  // One sequence's descriptors; slot / ring / table given explicitly (padding uses spares).
  auto describe = [&](int64_t i, int64_t n, int64_t start, int64_t slot, int64_t ring,
                      const int32_t* table) {
    for (int64_t j = 0; j < ss.jet_layers; ++j) {
      float* state = pools.slots + slot * ss.slot_floats() + j * ss.layer_floats();
      jet[j * seqs + i] = {static_cast<int32_t>(row), static_cast<int32_t>(n), state,
                           state + ss.state_floats()};
    }
    kg::AttnSeqDev base;
    base.token_offset = static_cast<int32_t>(row);
    base.num_tokens = static_cast<int32_t>(n);
    base.start_position = static_cast<int32_t>(start);
    base.block_table = table;
    attn[i] = base;
    for (int64_t j = 0; j < rs.swa_layers; ++j) {
      kg::AttnSeqDev w = base;
      w.block_table = nullptr;
      w.k_ring = pools.rings + (ring * rs.swa_layers + j) * 2 * rs.side_floats();
      w.v_ring = w.k_ring + rs.side_floats();
      swa[j * seqs + i] = w;
    }
    for (int64_t t = 0; t < n; ++t) {
      pos[row + t] = static_cast<int32_t>(start + t);
      tok[row + t] = static_cast<int32_t>(i);
    }
  };
  const int64_t real_seqs = static_cast<int64_t>(batch.seqs.size());
  int64_t update_at = 0;  // incremental: pairs written so far
  for (int64_t i = 0; i < real_seqs; ++i) {
    const BatchSequence& s = batch.seqs[i];
    const SequenceMemory& mem = *s.memory;
    const int64_t blocks = static_cast<int64_t>(mem.kv_blocks.size());
    const int32_t* table = nullptr;
    if (incremental) {
      const int64_t slot = mem.state_slot;
      for (int64_t b = mirror->FirstMissing(slot, blocks); b < blocks; ++b, ++update_at) {
        tables[2 * update_at] = static_cast<int32_t>(slot * pools.table_stride + b);
        tables[2 * update_at + 1] = mem.kv_blocks[b];
      }
      mirror->MarkUploaded(slot, blocks);
      table = pools.tables + slot * pools.table_stride;
    } else {
      std::copy(mem.kv_blocks.begin(), mem.kv_blocks.end(), tables + table_at);
      table = d_tables + table_at;
      table_at += blocks;
    }
    describe(i, s.num_tokens, s.start_position, std::max(mem.state_slot, 0),
             std::max(mem.window_ring, 0), table);
    const int64_t first = s.all_logits ? 0 : s.num_tokens - 1;
    for (int64_t t = first; t < s.num_tokens; ++t) last[out_row++] = static_cast<int32_t>(row + t);
    row += s.num_tokens;
  }
  if (seqs > real_seqs) {
    const int32_t* spare_table = pools.tables + pools.num_slots * pools.table_stride;
    if (!incremental) {
      tables[table_at] = static_cast<int32_t>(pools.num_blocks);  // the spare page
      spare_table = d_tables + table_at;
    }
    for (int64_t i = real_seqs; i < seqs; ++i) {
      ids[row] = 0;
      describe(i, 1, 0, pools.num_slots, pools.num_rings, spare_table);
      last[out_row++] = static_cast<int32_t>(row);
      row += 1;
    }
  }
  for (int64_t r = 0; r < layout.rows; ++r) samp[r] = kg::SamplingRowDev{};  // greedy

  StepMeta m;
  m.ids = reinterpret_cast<int32_t*>(device + layout.ids);
  m.positions = reinterpret_cast<int32_t*>(device + layout.positions);
  m.token_seq = reinterpret_cast<int32_t*>(device + layout.token_seq);
  m.last_rows = reinterpret_cast<int32_t*>(device + layout.last_rows);
  m.jet = reinterpret_cast<kg::JetSeqDev*>(device + layout.jet);
  m.swa = reinterpret_cast<kg::AttnSeqDev*>(device + layout.swa);
  m.attn = reinterpret_cast<kg::AttnSeqDev*>(device + layout.attn);
  m.sampling = reinterpret_cast<kg::SamplingRowDev*>(device + layout.sampling);
  if (incremental) {
    m.table_updates = reinterpret_cast<const int32_t*>(device + layout.tables);
    m.updates = layout.updates;
  }
  m.tokens = layout.tokens;
  m.seqs = layout.seqs;
  m.rows = layout.rows;
  m.real_rows = layout.real_rows;
  m.max_tokens = layout.max_tokens;
  m.max_context = layout.max_context;
  return m;
}

int64_t GraphSplitCount(int64_t splits) {
  if (splits <= 1) return 1;
  if (splits <= 4) return splits <= 2 ? 2 : 4;
  int64_t octave = 4;
  while (octave * 2 < splits) octave *= 2;  // octave < splits <= 2 * octave
  const int64_t step = octave / 4;
  return (splits + step - 1) / step * step;
}

}  // namespace jetserve
