// The CUDA step's metadata buffer (engine/cuda_step_meta.h), checked on the host: what each
// section holds, that every pointer is a device address (the buffer's device base or a pool),
// the padding of a decode batch to its graph bucket, and the address stability CUDA-graph
// replay relies on. No GPU needed: the device addresses are never dereferenced.
#include "engine/cuda_step_meta.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace jetserve {
namespace {

namespace kg = kernels::cuda;

// Fake device addresses: distinct, far apart and 256-byte aligned, like cudaMalloc's.
char* const kDeviceMeta = reinterpret_cast<char*>(uintptr_t{0x7f0000000000});
float* const kSlots = reinterpret_cast<float*>(uintptr_t{0x7e0000000000});
kg::bf16_t* const kRings = reinterpret_cast<kg::bf16_t*>(uintptr_t{0x7d0000000000});

DevicePools Pools() {
  DevicePools p;
  p.slots = kSlots;
  p.rings = kRings;
  p.slot_shape = {/*jet_layers=*/3, /*heads=*/2, /*key_dim=*/4, /*value_dim=*/6, /*conv_size=*/4};
  p.ring_shape = {/*swa_layers=*/2, /*window=*/5, /*kv_heads=*/2, /*head_dim=*/8};
  p.num_slots = 7;
  p.num_rings = 7;
  p.num_blocks = 40;
  return p;
}

struct Filled {
  StepMetaLayout layout;
  StepMeta meta;
  std::vector<char> host;
  template <typename T>
  const T* At(const void* device_address) const {
    const auto off = static_cast<const char*>(device_address) - kDeviceMeta;
    EXPECT_GE(off, 0);
    EXPECT_LE(static_cast<size_t>(off), layout.bytes);
    return reinterpret_cast<const T*>(host.data() + off);
  }
};

Filled Fill(const ForwardBatch& batch, int64_t pad_to, const DevicePools& pools = Pools(),
            BlockTableMirror* mirror = nullptr) {
  Filled f;
  auto layout = PlanStepMeta(batch, pad_to, pools.slot_shape.jet_layers,
                             pools.ring_shape.swa_layers, mirror, pools.table_stride);
  EXPECT_TRUE(layout.ok()) << layout.status();
  if (!layout.ok()) return f;
  f.layout = *layout;
  // Poisoned, so that an unwritten entry shows.
  f.host.assign(f.layout.bytes, static_cast<char>(0x5a));
  f.meta = FillStepMeta(batch, f.layout, pools, f.host.data(), kDeviceMeta, mirror);
  return f;
}

// Three sequences: a 3-token prefill chunk wanting every logit (a prompt-logprobs request), a
// decode token, and a 2-token chunk wanting its last.
struct Batch3 {
  SequenceMemory a{/*state_slot=*/2, /*window_ring=*/5, {10, 11}};
  SequenceMemory b{/*state_slot=*/0, /*window_ring=*/1, {3, 4, 8}};
  SequenceMemory c{/*state_slot=*/6, /*window_ring=*/0, {20}};
  ForwardBatch batch;
  Batch3() {
    batch.token_ids = {101, 102, 103, 201, 301, 302};
    batch.seqs = {{&a, /*start=*/4, /*tokens=*/3, /*all_logits=*/true},
                  {&b, /*start=*/9, /*tokens=*/1, /*all_logits=*/false},
                  {&c, /*start=*/0, /*tokens=*/2, /*all_logits=*/false}};
  }
};

TEST(CudaStepMetaTest, SectionsHoldTheBatch) {
  Batch3 b;
  const Filled f = Fill(b.batch, /*pad_to=*/0);
  const StepMeta& m = f.meta;
  EXPECT_EQ(m.tokens, 6);
  EXPECT_EQ(m.seqs, 3);
  EXPECT_EQ(m.rows, 5);  // 3 + 1 + 1
  EXPECT_EQ(m.real_rows, 5);
  EXPECT_EQ(m.max_tokens, 3);
  EXPECT_EQ(m.max_context, 10);  // b: 9 + 1
  EXPECT_EQ(f.layout.table_ints, 6);

  const int32_t* ids = f.At<int32_t>(m.ids);
  const int32_t* pos = f.At<int32_t>(m.positions);
  const int32_t* seq = f.At<int32_t>(m.token_seq);
  const std::vector<int32_t> want_ids = {101, 102, 103, 201, 301, 302};
  const std::vector<int32_t> want_pos = {4, 5, 6, 9, 0, 1};
  const std::vector<int32_t> want_seq = {0, 0, 0, 1, 2, 2};
  for (int t = 0; t < 6; ++t) {
    EXPECT_EQ(ids[t], want_ids[t]) << t;
    EXPECT_EQ(pos[t], want_pos[t]) << t;
    EXPECT_EQ(seq[t], want_seq[t]) << t;
  }
  const int32_t* last = f.At<int32_t>(m.last_rows);
  const std::vector<int32_t> want_last = {0, 1, 2, 3, 5};
  for (int r = 0; r < 5; ++r) EXPECT_EQ(last[r], want_last[r]) << r;

  // Every sampling row greedy (the engine's SampleLast uploads its own rows).
  const auto* samp = f.At<kg::SamplingRowDev>(m.sampling);
  for (int r = 0; r < 5; ++r) {
    EXPECT_EQ(samp[r].temperature, 0.0f);
    EXPECT_EQ(samp[r].logits_row, -1);
    EXPECT_EQ(samp[r].rep_ids, nullptr);
  }
}

TEST(CudaStepMetaTest, DescriptorsPointIntoThePoolsAndTheTables) {
  Batch3 b;
  const DevicePools pools = Pools();
  const Filled f = Fill(b.batch, /*pad_to=*/0, pools);
  const StepMeta& m = f.meta;
  const StateSlotShape& ss = pools.slot_shape;
  const WindowRingShape& rs = pools.ring_shape;
  const SequenceMemory* mem[3] = {&b.a, &b.b, &b.c};
  const int32_t offsets[3] = {0, 3, 4};
  const int32_t tokens[3] = {3, 1, 2};
  const int32_t starts[3] = {4, 9, 0};

  const auto* jet = f.At<kg::JetSeqDev>(m.jet);
  for (int j = 0; j < ss.jet_layers; ++j) {
    for (int i = 0; i < 3; ++i) {
      const kg::JetSeqDev& d = jet[j * 3 + i];
      SCOPED_TRACE(testing::Message() << "jet layer " << j << " seq " << i);
      EXPECT_EQ(d.token_offset, offsets[i]);
      EXPECT_EQ(d.num_tokens, tokens[i]);
      float* state = kSlots + mem[i]->state_slot * ss.slot_floats() + j * ss.layer_floats();
      EXPECT_EQ(d.state, state);
      EXPECT_EQ(d.conv_tail, state + ss.state_floats());
    }
  }

  const auto* attn = f.At<kg::AttnSeqDev>(m.attn);
  const auto* swa = f.At<kg::AttnSeqDev>(m.swa);
  int table_at = 0;
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(testing::Message() << "seq " << i);
    EXPECT_EQ(attn[i].token_offset, offsets[i]);
    EXPECT_EQ(attn[i].num_tokens, tokens[i]);
    EXPECT_EQ(attn[i].start_position, starts[i]);
    EXPECT_EQ(attn[i].k_ring, nullptr);
    // The table pointer is a device address inside the buffer, at this sequence's entries.
    const int32_t* table = f.At<int32_t>(attn[i].block_table);
    for (size_t k = 0; k < mem[i]->kv_blocks.size(); ++k) {
      EXPECT_EQ(table[k], mem[i]->kv_blocks[k]) << k;
    }
    EXPECT_EQ(reinterpret_cast<const char*>(attn[i].block_table),
              kDeviceMeta + f.layout.tables + table_at * sizeof(int32_t));
    table_at += static_cast<int>(mem[i]->kv_blocks.size());
    for (int j = 0; j < rs.swa_layers; ++j) {
      const kg::AttnSeqDev& w = swa[j * 3 + i];
      EXPECT_EQ(w.token_offset, offsets[i]);
      EXPECT_EQ(w.start_position, starts[i]);
      EXPECT_EQ(w.block_table, nullptr);
      kg::bf16_t* k = kRings + (mem[i]->window_ring * rs.swa_layers + j) * 2 * rs.side_floats();
      EXPECT_EQ(w.k_ring, k);
      EXPECT_EQ(w.v_ring, k + rs.side_floats());
    }
  }
}

TEST(CudaStepMetaTest, PaddingRunsOnTheSpareUnits) {
  // A decode batch of 3 padded to its bucket of 4... and of 8.
  SequenceMemory mem[3] = {{1, 1, {0, 1}}, {4, 2, {2}}, {5, 3, {3, 5, 6}}};
  ForwardBatch batch;
  batch.token_ids = {7, 8, 9};
  for (int i = 0; i < 3; ++i) batch.seqs.push_back({&mem[i], 10 + i, 1, false});
  const DevicePools pools = Pools();
  for (int64_t bucket : {4, 8}) {
    SCOPED_TRACE(testing::Message() << "bucket " << bucket);
    const Filled f = Fill(batch, bucket, pools);
    const StepMeta& m = f.meta;
    EXPECT_EQ(m.seqs, bucket);
    EXPECT_EQ(m.tokens, bucket);
    EXPECT_EQ(m.rows, bucket);
    EXPECT_EQ(m.real_rows, 3);
    EXPECT_EQ(f.layout.table_ints, 2 + 1 + 3 + 1);
    const int32_t* ids = f.At<int32_t>(m.ids);
    const int32_t* pos = f.At<int32_t>(m.positions);
    const int32_t* last = f.At<int32_t>(m.last_rows);
    const auto* jet = f.At<kg::JetSeqDev>(m.jet);
    const auto* attn = f.At<kg::AttnSeqDev>(m.attn);
    const auto* swa = f.At<kg::AttnSeqDev>(m.swa);
    for (int64_t i = 3; i < bucket; ++i) {
      SCOPED_TRACE(testing::Message() << "padding seq " << i);
      EXPECT_EQ(ids[i], 0);
      EXPECT_EQ(pos[i], 0);
      EXPECT_EQ(last[i], i);
      EXPECT_EQ(attn[i].start_position, 0);
      EXPECT_EQ(attn[i].num_tokens, 1);
      // The spare page, shared by every padding sequence.
      EXPECT_EQ(*f.At<int32_t>(attn[i].block_table), pools.num_blocks);
      EXPECT_EQ(attn[i].block_table, attn[3].block_table);
      for (int j = 0; j < pools.slot_shape.jet_layers; ++j) {
        EXPECT_EQ(jet[j * bucket + i].state, kSlots +
                                                 pools.num_slots * pools.slot_shape.slot_floats() +
                                                 j * pools.slot_shape.layer_floats());
      }
      for (int j = 0; j < pools.ring_shape.swa_layers; ++j) {
        EXPECT_EQ(swa[j * bucket + i].k_ring,
                  kRings + (pools.num_rings * pools.ring_shape.swa_layers + j) * 2 *
                               pools.ring_shape.side_floats());
      }
    }
    // The real sequences are untouched by the padding: the last one's descriptors.
    EXPECT_EQ(pos[2], 12);
    EXPECT_EQ(jet[2].state, kSlots + 5 * pools.slot_shape.slot_floats());
  }
  // pad_to at or below the batch's size adds nothing.
  EXPECT_EQ(Fill(batch, 3, pools).meta.seqs, 3);
  EXPECT_EQ(Fill(batch, 1, pools).meta.seqs, 3);
}

TEST(CudaStepMetaTest, OnlyTheTablesMoveWhenContextsGrow) {
  // Two decode steps of one graph bucket: same (tokens, seqs, rows), the second with longer
  // block tables. A graph captured on the first reads every fixed section at the same address.
  SequenceMemory m1[2] = {{0, 0, {1}}, {1, 1, {2}}};
  SequenceMemory m2[2] = {{0, 0, {1, 3, 4, 5}}, {1, 1, {2, 6, 7}}};
  ForwardBatch first, second;
  first.token_ids = second.token_ids = {5, 6};
  for (int i = 0; i < 2; ++i) {
    first.seqs.push_back({&m1[i], 3, 1, false});
    second.seqs.push_back({&m2[i], 40, 1, false});
  }
  const Filled a = Fill(first, 4), b = Fill(second, 4);
  EXPECT_EQ(a.meta.ids, b.meta.ids);
  EXPECT_EQ(a.meta.positions, b.meta.positions);
  EXPECT_EQ(a.meta.token_seq, b.meta.token_seq);
  EXPECT_EQ(a.meta.last_rows, b.meta.last_rows);
  EXPECT_EQ(a.meta.jet, b.meta.jet);
  EXPECT_EQ(a.meta.swa, b.meta.swa);
  EXPECT_EQ(a.meta.attn, b.meta.attn);
  EXPECT_EQ(a.meta.sampling, b.meta.sampling);
  EXPECT_EQ(a.layout.tables, b.layout.tables);
  EXPECT_GT(b.layout.bytes, a.layout.bytes);
  EXPECT_EQ(b.layout.tables, b.layout.bytes - 16 * ((b.layout.table_ints * 4 + 15) / 16));
}

TEST(CudaStepMetaTest, SectionsAreAlignedAndDisjoint) {
  Batch3 b;
  const Filled f = Fill(b.batch, 5);
  const StepMetaLayout& l = f.layout;
  const size_t starts[] = {l.ids, l.positions, l.token_seq, l.last_rows, l.jet,
                           l.swa, l.attn,      l.sampling,  l.tables,    l.bytes};
  auto n = [](int64_t count, size_t bytes) { return static_cast<size_t>(count) * bytes; };
  const size_t sizes[] = {n(l.tokens, 4),
                          n(l.tokens, 4),
                          n(l.tokens, 4),
                          n(l.rows, 4),
                          n(3 * l.seqs, sizeof(kg::JetSeqDev)),
                          n(2 * l.seqs, sizeof(kg::AttnSeqDev)),
                          n(l.seqs, sizeof(kg::AttnSeqDev)),
                          n(l.rows, sizeof(kg::SamplingRowDev)),
                          n(l.table_ints, 4)};
  for (int s = 0; s < 9; ++s) {
    SCOPED_TRACE(testing::Message() << "section " << s);
    EXPECT_EQ(starts[s] % 16, 0u);
    EXPECT_LE(starts[s] + sizes[s], starts[s + 1]);
    EXPECT_LT(starts[s + 1] - starts[s], sizes[s] + 16);
  }
}

TEST(CudaStepMetaTest, ModelsWithoutJetOrSwaLayersGetNoDescriptors) {
  DevicePools pools = Pools();
  pools.slot_shape.jet_layers = 0;
  pools.ring_shape.swa_layers = 0;
  SequenceMemory mem{/*state_slot=*/-1, /*window_ring=*/-1, {0, 1}};
  ForwardBatch batch;
  batch.token_ids = {1, 2};
  batch.seqs = {{&mem, 0, 2, false}};
  const Filled f = Fill(batch, 0, pools);
  EXPECT_EQ(f.layout.jet, f.layout.swa);  // empty sections
  EXPECT_EQ(f.layout.swa, f.layout.attn);
  const auto* attn = f.At<kg::AttnSeqDev>(f.meta.attn);
  EXPECT_EQ(attn[0].num_tokens, 2);
  EXPECT_EQ(f.At<int32_t>(attn[0].block_table)[1], 1);
}

// ---- Incremental block tables (JETSERVE_CUDA_TABLES=incremental) ----

int32_t* const kTables = reinterpret_cast<int32_t*>(uintptr_t{0x7c0000000000});

DevicePools IncrementalPools() {
  DevicePools p = Pools();
  p.tables = kTables;
  p.table_stride = 8;
  return p;
}

// The (index, page) pairs a step carries.
std::vector<std::pair<int32_t, int32_t>> Updates(const Filled& f) {
  std::vector<std::pair<int32_t, int32_t>> pairs;
  if (f.meta.updates == 0) return pairs;
  const int32_t* p = f.At<int32_t>(f.meta.table_updates);
  for (int64_t i = 0; i < f.meta.updates; ++i) pairs.emplace_back(p[2 * i], p[2 * i + 1]);
  return pairs;
}

using Pairs = std::vector<std::pair<int32_t, int32_t>>;

TEST(CudaStepMetaTest, IncrementalTablesCarryOnlyTheNewPages) {
  const DevicePools pools = IncrementalPools();
  BlockTableMirror mirror(pools.num_slots + 1);
  Batch3 b;  // slots 2, 0, 6 with tables {10, 11}, {3, 4, 8}, {20}
  Filled f = Fill(b.batch, 0, pools, &mirror);
  EXPECT_EQ(f.layout.table_ints, 0);
  EXPECT_EQ(Updates(f), (Pairs{{16, 10}, {17, 11}, {0, 3}, {1, 4}, {2, 8}, {48, 20}}));
  const auto* attn = f.At<kg::AttnSeqDev>(f.meta.attn);
  EXPECT_EQ(attn[0].block_table, kTables + 2 * 8);  // the slot's row on the device
  EXPECT_EQ(attn[1].block_table, kTables + 0);
  EXPECT_EQ(attn[2].block_table, kTables + 6 * 8);

  // The next step: sequence a and c have grown by a page each, b not.
  b.a.kv_blocks.push_back(12);
  b.c.kv_blocks.push_back(21);
  f = Fill(b.batch, 0, pools, &mirror);
  EXPECT_EQ(Updates(f), (Pairs{{18, 12}, {49, 21}}));

  // Nothing new: an empty section.
  const Filled same = Fill(b.batch, 0, pools, &mirror);
  EXPECT_EQ(same.meta.updates, 0);
  EXPECT_EQ(same.layout.tables, same.layout.bytes);

  // Slot 0 handed to a new sequence: its row is rewritten whole, from entry 0.
  mirror.Reset(0);
  b.b.kv_blocks = {30};
  f = Fill(b.batch, 0, pools, &mirror);
  EXPECT_EQ(Updates(f), (Pairs{{0, 30}}));

  // A table that shrank without a reset (a missed hand-out) is rewritten whole too.
  b.c.kv_blocks = {40};
  f = Fill(b.batch, 0, pools, &mirror);
  EXPECT_EQ(Updates(f), (Pairs{{48, 40}}));
}

TEST(CudaStepMetaTest, IncrementalTablesPadOnTheSpareRow) {
  const DevicePools pools = IncrementalPools();
  BlockTableMirror mirror(pools.num_slots + 1);
  SequenceMemory mem{/*state_slot=*/3, /*window_ring=*/3, {5}};
  ForwardBatch batch;
  batch.token_ids = {9};
  batch.seqs = {{&mem, 7, 1, false}};
  const Filled f = Fill(batch, 4, pools, &mirror);
  EXPECT_EQ(Updates(f), (Pairs{{24, 5}}));  // no pair for the padding
  const auto* attn = f.At<kg::AttnSeqDev>(f.meta.attn);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(attn[i].block_table, kTables + pools.num_slots * 8) << i;
}

TEST(CudaStepMetaTest, IncrementalTablesRejectWhatTheRowsCannotHold) {
  const DevicePools pools = IncrementalPools();
  BlockTableMirror mirror(pools.num_slots + 1);
  auto plan = [&](SequenceMemory& mem) {
    ForwardBatch batch;
    batch.token_ids = {1};
    batch.seqs = {{&mem, 0, 1, false}};
    return PlanStepMeta(batch, 0, 3, 2, &mirror, pools.table_stride).status();
  };
  SequenceMemory no_slot{-1, 0, {1}}, spare_slot{7, 0, {1}}, too_long{1, 0, {}};
  too_long.kv_blocks.assign(9, 2);  // the rows hold 8
  EXPECT_TRUE(absl::IsInvalidArgument(plan(no_slot)));
  EXPECT_TRUE(absl::IsInvalidArgument(plan(spare_slot)));  // row 7 is the padding's
  EXPECT_TRUE(absl::IsInvalidArgument(plan(too_long)));
  too_long.kv_blocks.resize(8);
  EXPECT_TRUE(plan(too_long).ok());
}

TEST(CudaStepMetaTest, GraphSplitCountsAreFewAndCloseAbove) {
  EXPECT_EQ(GraphSplitCount(0), 1);
  EXPECT_EQ(GraphSplitCount(1), 1);
  EXPECT_EQ(GraphSplitCount(2), 2);
  EXPECT_EQ(GraphSplitCount(3), 4);
  EXPECT_EQ(GraphSplitCount(5), 5);
  EXPECT_EQ(GraphSplitCount(9), 10);
  EXPECT_EQ(GraphSplitCount(64), 64);
  EXPECT_EQ(GraphSplitCount(65), 80);  // a 64K-token decode: ~820 keys per split
  EXPECT_EQ(GraphSplitCount(1024), 1024);
  int64_t distinct = 0, previous = 0;
  for (int64_t n = 1; n <= 1024; ++n) {
    const int64_t r = GraphSplitCount(n);
    EXPECT_GE(r, n);
    if (n > 4) {
      EXPECT_LT(r - n, r / 4) << n;  // at most one step (a quarter octave) above
    }
    EXPECT_GE(r, previous) << n;            // monotone
    EXPECT_EQ(GraphSplitCount(r), r) << n;  // a fixed point
    if (r != previous) ++distinct;
    previous = r;
  }
  EXPECT_LE(distinct, 36);  // 1, 2, 4, then 4 per octave up to 1024
}

}  // namespace
}  // namespace jetserve
