// The scheduler on its own (no model): admission order, budgets, and the room an n > 1 request
// is admitted with, which stays pledged until its other choices exist.
#include "engine/scheduler.h"

#include <memory>
#include <vector>

#include "engine/checkpoint/model_config.h"
#include "engine/memory/hybrid_memory.h"
#include "engine/sequence.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/test_paths.h"

namespace jetserve {
namespace {

// Two jet layers and one attn layer: state slots and KV pages, no window rings.
constexpr char kConfig[] = R"json({
  "model_type": "jet_nemotron",
  "hidden_size": 36, "intermediate_size": 52, "num_hidden_layers": 3,
  "num_attention_heads": 3, "num_key_value_heads": 1,
  "layer_types": ["jet", "attn", "jet"],
  "efficient_attention_config": {
    "jet": {"num_heads": 3, "head_dim": 6, "expand_v": 1.5, "conv_size": 4,
            "dconv_generator_reduction": 3, "norm_eps": "1e-5"}},
  "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": null,
  "vocab_size": 97, "max_position_embeddings": 256, "tie_word_embeddings": false,
  "bos_token_id": 1, "eos_token_id": 2
})json";

class SchedulerTest : public ::testing::Test {
 protected:
  void Init(int64_t max_seqs, int64_t kv_blocks, int64_t max_batch_tokens) {
    auto config = ModelConfig::FromJson(kConfig, "config");
    ASSERT_TRUE(config.ok()) << config.status();
    MemoryOptions mem;
    mem.max_seqs = max_seqs;
    mem.page_size = 4;
    mem.kv_blocks = kv_blocks;
    mem.host_storage = false;
    auto memory = HybridMemory::Create(*config, mem);
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_ = std::move(*memory);
    const std::string dir = testing::ScratchDir("scheduler_test_tokenizer");
    ASSERT_TRUE(WriteByteLevelTokenizer(dir).ok());
    auto tokenizer = Tokenizer::LoadFromDir(dir);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
    scheduler_ =
        std::make_unique<Scheduler>(memory_.get(), SchedulerOptions{max_seqs, max_batch_tokens});
  }

  Sequence* Add(int prompt_tokens, int n = 1) {
    EngineRequest r;
    r.n = n;
    r.max_tokens = 8;
    auto group = std::make_shared<RequestGroup>(
        std::move(r), std::vector<int32_t>(prompt_tokens, 5), [](RequestOutput) {});
    seqs_.push_back(std::make_unique<Sequence>(group, tokenizer_.get(), next_arrival_++));
    scheduler_->Add(seqs_.back().get());
    return seqs_.back().get();
  }

  static std::vector<Sequence*> Scheduled(const SchedulePlan& plan) {
    std::vector<Sequence*> out;
    for (const ScheduledChunk& c : plan.chunks) out.push_back(c.seq);
    return out;
  }

  // What the engine does after a step: each chunk computed, a token for those that sample.
  static void Computed(const SchedulePlan& plan) {
    for (const ScheduledChunk& c : plan.chunks) {
      c.seq->AddComputed(c.num_tokens);
      if (c.sample) {
        SampledToken token;
        token.id = 65;
        c.seq->AppendToken(token);
      }
    }
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<HybridMemory> memory_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
  int64_t next_arrival_ = 0;
};

TEST_F(SchedulerTest, AdmitsInArrivalOrderWithinTheBudget) {
  Init(/*max_seqs=*/4, /*kv_blocks=*/64, /*max_batch_tokens=*/10);
  Sequence* a = Add(6);
  Sequence* b = Add(6);
  Sequence* c = Add(3);
  SchedulePlan plan = scheduler_->Schedule();
  // a whole, b's first 4 tokens; c waits for budget (the head is never overtaken).
  ASSERT_EQ(Scheduled(plan), (std::vector<Sequence*>{a, b}));
  EXPECT_EQ(plan.chunks[0].num_tokens, 6);
  EXPECT_TRUE(plan.chunks[0].sample);
  EXPECT_EQ(plan.chunks[1].num_tokens, 4);
  EXPECT_FALSE(plan.chunks[1].sample);
  EXPECT_EQ(scheduler_->num_waiting(), 1);
  Computed(plan);
  plan = scheduler_->Schedule();
  // a decodes its token, b finishes its prompt, c is admitted.
  ASSERT_EQ(Scheduled(plan), (std::vector<Sequence*>{a, b, c}));
  EXPECT_EQ(plan.chunks[0].num_tokens, 1);
  EXPECT_EQ(plan.chunks[1].num_tokens, 2);
  EXPECT_EQ(plan.chunks[2].num_tokens, 3);
}

// The slots an n > 1 request needs for its other choices stay free while its prompt is
// prefilled over several steps, so the choices share the prefill.
TEST_F(SchedulerTest, ParallelRequestKeepsSlotsForItsChoicesUntilTheyExist) {
  Init(/*max_seqs=*/4, /*kv_blocks=*/64, /*max_batch_tokens=*/8);
  Sequence* a = Add(20, /*n=*/3);
  Sequence* b = Add(2);
  Sequence* c = Add(2);
  SchedulePlan plan = scheduler_->Schedule();
  EXPECT_EQ(Scheduled(plan), (std::vector<Sequence*>{a}));  // the budget went to a's prompt
  Computed(plan);
  plan = scheduler_->Schedule();
  EXPECT_EQ(Scheduled(plan), (std::vector<Sequence*>{a}));  // and again
  Computed(plan);
  plan = scheduler_->Schedule();
  // a's last 4 tokens, then b: a, its two pledged choices and b make 4 sequences; c must wait.
  ASSERT_EQ(Scheduled(plan), (std::vector<Sequence*>{a, b}));
  EXPECT_TRUE(plan.chunks[0].sample);  // a finishes its prompt: the engine forks now
  EXPECT_EQ(scheduler_->num_waiting(), 1) << "c must not take a slot a's choices need";
  EXPECT_EQ(scheduler_->waiting().front(), c);
}

// The same for memory: the KV pages for a's other choice stay free.
TEST_F(SchedulerTest, ParallelRequestKeepsMemoryForItsChoicesUntilTheyExist) {
  // a (n = 2, 20 prompt tokens) takes 5 pages of 4 positions and pledges 5 more for its other
  // choice; of 11 pages that leaves 1, and b's 8 prompt tokens need 2.
  Init(/*max_seqs=*/8, /*kv_blocks=*/11, /*max_batch_tokens=*/64);
  Sequence* a = Add(20, /*n=*/2);
  Sequence* b = Add(8);
  SchedulePlan plan = scheduler_->Schedule();
  ASSERT_EQ(Scheduled(plan), (std::vector<Sequence*>{a})) << "b would take a's choice's pages";
  EXPECT_TRUE(plan.chunks[0].sample);
  EXPECT_EQ(scheduler_->waiting().front(), b);
  // Once a's choices exist (the engine forks them) the pledge is over: here a's group says so.
  Computed(plan);
  a->group().forked = true;
  plan = scheduler_->Schedule();
  EXPECT_EQ(Scheduled(plan), (std::vector<Sequence*>{a, b}));
}

}  // namespace
}  // namespace jetserve
