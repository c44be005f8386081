// The hybrid memory pools: sizing, admission, zeroed slots, release back to zero usage.
#include "engine/memory/hybrid_memory.h"
#include "gtest/gtest.h"
#include "tests/engine/tiny_model.h"

namespace jetserve {
namespace {

ModelConfig TinyConfig() {
  auto c = ModelConfig::FromJson(testing::kTinyConfig, "tiny");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

int64_t Used(const HybridMemory& m, const std::string& name) {
  for (const auto& u : m.Usage()) {
    if (u.name == name) return u.usage.used;
  }
  return -1;
}

TEST(HybridMemoryTest, ComposesOnePoolPerLayerTypePresent) {
  MemoryOptions options;
  options.max_seqs = 2;
  options.kv_blocks = 5;
  options.page_size = 4;
  auto m = HybridMemory::Create(TinyConfig(), options);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE((*m)->state_slots(), nullptr);
  ASSERT_NE((*m)->window_rings(), nullptr);
  ASSERT_NE((*m)->paged_kv(), nullptr);
  EXPECT_EQ((*m)->Usage().size(), 3u);
  // Layers [jet, attn, swa, jet, attn]: indices within their own type.
  EXPECT_EQ((*m)->index_within_type(0), 0);
  EXPECT_EQ((*m)->index_within_type(1), 0);
  EXPECT_EQ((*m)->index_within_type(2), 0);
  EXPECT_EQ((*m)->index_within_type(3), 1);
  EXPECT_EQ((*m)->index_within_type(4), 1);

  auto all_jet = ModelConfig::FromJson(
      R"({"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 1, "layer_types": ["jet"],
          "efficient_attention_config": {"jet": {"num_heads": 2, "head_dim": 4, "expand_v": 1,
             "conv_size": 2, "dconv_generator_reduction": 2}},
          "vocab_size": 10, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
          "rope_theta": 10000.0, "tie_word_embeddings": true})",
      "all-jet");
  ASSERT_TRUE(all_jet.ok()) << all_jet.status();
  auto j = HybridMemory::Create(*all_jet, options);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)->paged_kv(), nullptr);
  EXPECT_EQ((*j)->window_rings(), nullptr);
  EXPECT_EQ((*j)->Usage().size(), 1u);
}

TEST(HybridMemoryTest, AdmissionIsAQuestionOfFreeUnits) {
  MemoryOptions options;
  options.max_seqs = 2;
  options.kv_blocks = 5;
  options.page_size = 4;
  auto m = *HybridMemory::Create(TinyConfig(), options);
  SequenceMemory a, b, c;
  ASSERT_TRUE(m->CanReserve(a, 12));  // 3 pages
  m->Reserve(a, 12);
  EXPECT_EQ(a.kv_blocks.size(), 3u);
  EXPECT_GE(a.state_slot, 0);
  EXPECT_GE(a.window_ring, 0);
  EXPECT_FALSE(m->CanReserve(b, 9));  // needs 3 pages, 2 left
  ASSERT_TRUE(m->CanReserve(b, 8));
  m->Reserve(b, 8);
  EXPECT_FALSE(m->CanReserve(c, 1));  // no slot left
  // Growing an existing sequence needs only the extra pages.
  EXPECT_TRUE(m->CanReserve(a, 12));
  EXPECT_FALSE(m->CanReserve(a, 13));
  EXPECT_EQ(Used(*m, "kv_blocks"), 5);
  EXPECT_EQ(Used(*m, "state_slots"), 2);
  m->Release(a);
  m->Release(b);
  EXPECT_EQ(a.state_slot, -1);
  EXPECT_TRUE(a.kv_blocks.empty());
  for (const auto& u : m->Usage()) EXPECT_EQ(u.usage.used, 0) << u.name;
}

TEST(HybridMemoryTest, StateSlotIsZeroedWhenHandedToANewSequence) {
  MemoryOptions options;
  options.max_seqs = 1;
  options.kv_blocks = 1;
  auto m = *HybridMemory::Create(TinyConfig(), options);
  SequenceMemory a;
  m->Reserve(a, 1);
  const int32_t slot = a.state_slot;
  StateSlotPool* pool = m->state_slots();
  const int64_t n = pool->shape().slot_floats();
  std::fill_n(pool->state(slot, 0), n, 3.0f);  // dirty every layer's state and tail
  m->Release(a);
  SequenceMemory b;
  m->Reserve(b, 1);
  ASSERT_EQ(b.state_slot, slot);  // the same slot, reused
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(pool->state(slot, 0)[i], 0.0f) << i;
}

// n > 1 parallel samples: the fork gets its own units holding exactly the source's contents
// (state, conv tail, window ring, the KV blocks covering the copied positions), and the two
// are independent afterwards.
TEST(HybridMemoryTest, ForkCopiesEveryPoolsContents) {
  MemoryOptions options;
  options.max_seqs = 3;
  options.page_size = 4;
  options.kv_blocks = 12;
  auto m = *HybridMemory::Create(TinyConfig(), options);
  ASSERT_NE(m->state_slots(), nullptr);
  ASSERT_NE(m->paged_kv(), nullptr);
  const int64_t tokens = 10;  // 3 blocks of 4
  SequenceMemory src;
  m->Reserve(src, tokens);
  StateSlotPool* slots = m->state_slots();
  const int64_t slot_floats = slots->shape().slot_floats();
  for (int64_t i = 0; i < slot_floats; ++i) slots->state(src.state_slot, 0)[i] = 0.5f + i;
  PagedKvPool* kv = m->paged_kv();
  const int64_t side = kv->shape().side_floats();
  auto kv_value = [](int64_t layer, int side_index, int64_t block, int64_t i) {
    return static_cast<float>(layer * 1000000 + side_index * 100000 + block * 1000 + i);
  };
  for (int64_t layer = 0; layer < kv->shape().attn_layers; ++layer) {
    for (size_t b = 0; b < src.kv_blocks.size(); ++b) {
      for (int64_t i = 0; i < side; ++i) {
        kv->keys(layer)[src.kv_blocks[b] * side + i] = kv_value(layer, 0, b, i);
        kv->values(layer)[src.kv_blocks[b] * side + i] = kv_value(layer, 1, b, i);
      }
    }
  }
  WindowRingPool* rings = m->window_rings();
  int64_t ring_floats = 0;
  if (rings != nullptr) {
    ring_floats = rings->shape().ring_floats();
    for (int64_t i = 0; i < ring_floats; ++i) rings->keys(src.window_ring, 0)[i] = -1.0f - i;
  }

  ASSERT_TRUE(m->CanReserve(src, tokens, /*copies=*/3));
  EXPECT_FALSE(m->CanReserve(src, tokens, /*copies=*/4));  // 3 slots only
  SequenceMemory dst;
  m->Fork(src, dst, tokens);
  ASSERT_GE(dst.state_slot, 0);
  EXPECT_NE(dst.state_slot, src.state_slot);
  ASSERT_EQ(dst.kv_blocks.size(), src.kv_blocks.size());
  for (int64_t i = 0; i < slot_floats; ++i) {
    ASSERT_EQ(slots->state(dst.state_slot, 0)[i], 0.5f + i) << i;
  }
  for (int64_t layer = 0; layer < kv->shape().attn_layers; ++layer) {
    for (size_t b = 0; b < dst.kv_blocks.size(); ++b) {
      EXPECT_NE(dst.kv_blocks[b], src.kv_blocks[b]);
      for (int64_t i = 0; i < side; ++i) {
        ASSERT_EQ(kv->keys(layer)[dst.kv_blocks[b] * side + i], kv_value(layer, 0, b, i));
        ASSERT_EQ(kv->values(layer)[dst.kv_blocks[b] * side + i], kv_value(layer, 1, b, i));
      }
    }
  }
  if (rings != nullptr) {
    for (int64_t i = 0; i < ring_floats; ++i) {
      ASSERT_EQ(rings->keys(dst.window_ring, 0)[i], -1.0f - i) << i;
    }
  }
  // Independent afterwards: writing the copy leaves the source alone.
  slots->state(dst.state_slot, 0)[0] = 99.0f;
  EXPECT_EQ(slots->state(src.state_slot, 0)[0], 0.5f);
  m->Release(src);
  m->Release(dst);
  for (const auto& u : m->Usage()) EXPECT_EQ(u.usage.used, 0) << u.name;
}

TEST(HybridMemoryTest, BudgetSizing) {
  const ModelConfig c = TinyConfig();
  MemoryOptions options;
  options.max_seqs = 4;
  options.budget_bytes = 1 << 20;
  auto m = HybridMemory::Create(c, options);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_LE((*m)->total_bytes(), options.budget_bytes);
  EXPECT_GT((*m)->paged_kv()->Usage().total, 0);
  options.budget_bytes = 1000;  // less than the slots alone
  auto small = HybridMemory::Create(c, options);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("max_seqs"), std::string::npos) << small.status();
}

// Host pools past the machine's memory are refused with the numbers (they were a bad_alloc, or
// the OOM killer while zeroing them); a device backend's bookkeeping-only pools are not.
TEST(HybridMemoryTest, HostPoolsLargerThanTheMachineAreRefused) {
  const ModelConfig c = TinyConfig();
  MemoryOptions options;
  options.max_seqs = 4;
  options.budget_bytes = int64_t{1} << 50;  // 1 PiB
  auto m = HybridMemory::Create(c, options);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(m.status().message().find("GiB of host memory; this machine has"), std::string::npos)
      << m.status();
  // Device pools (bookkeeping only here) are the device's to hold: 8 GiB, whatever this has.
  options.host_storage = false;
  options.kv_element_bytes = 2;
  options.budget_bytes = int64_t{1} << 33;
  EXPECT_TRUE(HybridMemory::Create(c, options).ok());
}

// A device backend that stores KV pages and rings in bf16 gets the blocks a budget pays for at
// 2 bytes an element: the rings cost half, the state the same, and the rest buys twice the
// blocks; total_bytes counts what the device holds.
TEST(HybridMemoryTest, BudgetSizingWithBf16DeviceCaches) {
  const ModelConfig c = TinyConfig();
  MemoryOptions fp32;
  fp32.max_seqs = 4;
  fp32.budget_bytes = 1 << 20;
  fp32.host_storage = false;
  MemoryOptions bf16 = fp32;
  bf16.kv_element_bytes = 2;
  auto a = HybridMemory::Create(c, fp32);
  auto b = HybridMemory::Create(c, bf16);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const StateSlotShape slot{2, c.jet.num_heads, c.jet.head_dim, c.jet.value_head_dim,
                            c.jet.conv_size};
  const WindowRingShape ring{1, c.swa_window_size, c.num_key_value_heads, c.head_dim};
  const PagedKvShape page{2, fp32.page_size, c.num_key_value_heads, c.head_dim};
  const int64_t state = 4 * 4 * slot.slot_floats();  // 4 sequences, fp32
  EXPECT_EQ((*a)->paged_kv()->Usage().total,
            (fp32.budget_bytes - state - 4 * 4 * ring.ring_floats()) / (4 * page.block_floats()));
  EXPECT_EQ((*b)->paged_kv()->Usage().total,
            (fp32.budget_bytes - state - 4 * 2 * ring.ring_floats()) / (2 * page.block_floats()));
  EXPECT_GT((*b)->paged_kv()->Usage().total, 2 * (*a)->paged_kv()->Usage().total - 2);
  EXPECT_LE((*b)->total_bytes(), fp32.budget_bytes);
  EXPECT_GT((*b)->total_bytes(), fp32.budget_bytes - 2 * page.block_floats());

  // Host pools are fp32: asking for bf16 there, or for any other size, is an error.
  MemoryOptions host = bf16;
  host.host_storage = true;
  auto bad = HybridMemory::Create(c, host);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kv_element_bytes"), std::string::npos) << bad.status();
  bf16.kv_element_bytes = 3;
  EXPECT_FALSE(HybridMemory::Create(c, bf16).ok());
}

}  // namespace
}  // namespace jetserve
