// The forward pass's own consistency: prefill whole, in chunks of any size, or one token at a
// time gives the same logits; batching sequences together gives bitwise the same logits as
// running each alone; bad batches are errors, not crashes. (Agreement with the independent
// PyTorch reference is the golden test's job.)
#include "engine/model.h"

#include <cmath>
#include <random>

#include "engine/generation.h"
#include "gtest/gtest.h"
#include "tests/engine/tiny_model.h"

namespace jetserve {
namespace {

std::vector<int32_t> RandomIds(int n, uint32_t seed, int vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

class ModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTinyCheckpoint("model_test"));
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    auto m = Model::Load(*dir_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    MemoryOptions options;
    options.max_seqs = 4;
    options.page_size = 4;
    options.kv_blocks = 64;
    auto mem = HybridMemory::Create(model_->config(), options);
    ASSERT_TRUE(mem.ok()) << mem.status();
    memory_ = std::move(*mem);
  }

  // Logits for every position of `ids`, fed in chunks of the given sizes (cycled).
  std::vector<float> RunChunked(const std::vector<int32_t>& ids, const std::vector<int>& chunks) {
    SequenceMemory seq;
    memory_->Reserve(seq, ids.size());
    std::vector<float> all, logits;
    size_t pos = 0, c = 0;
    while (pos < ids.size()) {
      const size_t n = std::min<size_t>(chunks[c++ % chunks.size()], ids.size() - pos);
      ForwardBatch batch;
      batch.token_ids.assign(ids.begin() + pos, ids.begin() + pos + n);
      batch.seqs.push_back({&seq, static_cast<int64_t>(pos), static_cast<int64_t>(n), true});
      const absl::Status s = model_->Forward(batch, *memory_, &logits);
      EXPECT_TRUE(s.ok()) << s;
      all.insert(all.end(), logits.begin(), logits.end());
      pos += n;
    }
    memory_->Release(seq);
    return all;
  }

  static std::string* dir_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<HybridMemory> memory_;
};

std::string* ModelTest::dir_ = nullptr;

TEST_F(ModelTest, LogitsAreFiniteAndNotDegenerate) {
  const std::vector<float> logits = RunChunked(RandomIds(8, 1, 97), {8});
  ASSERT_EQ(logits.size(), 8u * 97);
  double sum = 0, sq = 0;
  for (float x : logits) {
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sq += x * x;
  }
  const double mean = sum / logits.size();
  const double stddev = std::sqrt(sq / logits.size() - mean * mean);
  EXPECT_GT(stddev, 0.5) << "random weights should give a spread of logits";
}

TEST_F(ModelTest, PrefillChunkingAndDecodeAgree) {
  // 29 tokens: wraps the swa window (5) several times and spans 8 KV pages of 4.
  const std::vector<int32_t> ids = RandomIds(29, 2, 97);
  const std::vector<float> whole = RunChunked(ids, {29});
  for (const std::vector<int>& chunks :
       {std::vector<int>{1}, std::vector<int>{3}, std::vector<int>{7, 1, 2}, std::vector<int>{5}}) {
    const std::vector<float> got = RunChunked(ids, chunks);
    ASSERT_EQ(got.size(), whole.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], whole[i], 1e-4 + 1e-4 * std::abs(whole[i]))
          << "chunks starting " << chunks[0] << ", logit " << i;
    }
  }
}

TEST_F(ModelTest, BatchingDoesNotChangeResults) {
  // Three sequences of different lengths, each alone, then all together in mixed steps.
  const std::vector<std::vector<int32_t>> prompts = {RandomIds(9, 3, 97), RandomIds(1, 4, 97),
                                                     RandomIds(14, 5, 97)};
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) alone.push_back(RunChunked(p, {4}));

  std::vector<SequenceMemory> seqs(3);
  std::vector<size_t> pos(3, 0);
  std::vector<std::vector<float>> together(3);
  for (int i = 0; i < 3; ++i) memory_->Reserve(seqs[i], prompts[i].size());
  std::vector<float> logits;
  while (pos[0] < prompts[0].size() || pos[1] < prompts[1].size() || pos[2] < prompts[2].size()) {
    ForwardBatch batch;
    for (int i = 0; i < 3; ++i) {
      const size_t n = std::min<size_t>(4, prompts[i].size() - pos[i]);
      if (n == 0) continue;
      batch.token_ids.insert(batch.token_ids.end(), prompts[i].begin() + pos[i],
                             prompts[i].begin() + pos[i] + n);
      batch.seqs.push_back({&seqs[i], static_cast<int64_t>(pos[i]), static_cast<int64_t>(n), true});
    }
    ASSERT_TRUE(model_->Forward(batch, *memory_, &logits).ok());
    size_t row = 0;
    for (const BatchSequence& s : batch.seqs) {
      const int i = static_cast<int>(&*s.memory - &seqs[0]);
      together[i].insert(together[i].end(), logits.begin() + row * 97,
                         logits.begin() + (row + s.num_tokens) * 97);
      row += s.num_tokens;
      pos[i] += s.num_tokens;
    }
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(together[i], alone[i]) << "sequence " << i;  // bitwise
    memory_->Release(seqs[i]);
  }
}

TEST_F(ModelTest, LastTokenLogitsOnlyUnlessAsked) {
  const std::vector<int32_t> ids = RandomIds(6, 6, 97);
  const std::vector<float> all = RunChunked(ids, {6});
  SequenceMemory seq;
  memory_->Reserve(seq, 6);
  ForwardBatch batch{ids, {{&seq, 0, 6, false}}};
  std::vector<float> logits;
  ASSERT_TRUE(model_->Forward(batch, *memory_, &logits).ok());
  ASSERT_EQ(logits.size(), 97u);
  EXPECT_EQ(logits, std::vector<float>(all.end() - 97, all.end()));
  memory_->Release(seq);
}

TEST_F(ModelTest, BadBatchesAreErrors) {
  SequenceMemory seq;
  memory_->Reserve(seq, 4);
  std::vector<float> logits;
  ForwardBatch bad_id{{1, 97}, {{&seq, 0, 2, false}}};
  absl::Status s = model_->Forward(bad_id, *memory_, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("97"), std::string::npos) << s;
  ForwardBatch mismatch{{1, 2, 3}, {{&seq, 0, 2, false}}};
  EXPECT_EQ(model_->Forward(mismatch, *memory_, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  ForwardBatch too_long{{1, 2, 3, 4, 5}, {{&seq, 0, 5, false}}};  // 4 positions reserved
  EXPECT_EQ(model_->Forward(too_long, *memory_, &logits).code(),
            absl::StatusCode::kFailedPrecondition);
  SequenceMemory none;
  ForwardBatch no_memory{{1}, {{&none, 0, 1, false}}};
  EXPECT_EQ(model_->Forward(no_memory, *memory_, &logits).code(),
            absl::StatusCode::kFailedPrecondition);
  memory_->Release(seq);
}

TEST_F(ModelTest, GenerateOneStopsAndReleasesMemory) {
  GenerationOptions options;
  options.max_tokens = 12;
  options.prefill_chunk = 3;
  std::vector<int32_t> tokens;
  auto finish = GenerateOne(*model_, *memory_, RandomIds(7, 8, 97), options,
                            [&](const SampledToken& t) { tokens.push_back(t.id); });
  ASSERT_TRUE(finish.ok()) << finish.status();
  EXPECT_EQ(*finish, FinishReason::kLength);
  EXPECT_EQ(tokens.size(), 12u);
  for (const auto& u : memory_->Usage()) EXPECT_EQ(u.usage.used, 0) << u.name;
  // Greedy generation equals argmax of teacher-forced logits.
  std::vector<int32_t> seq = RandomIds(7, 8, 97);
  seq.insert(seq.end(), tokens.begin(), tokens.end() - 1);
  const std::vector<float> logits = RunChunked(seq, {19});
  for (size_t i = 0; i < tokens.size(); ++i) {
    const float* row = logits.data() + (6 + i) * 97;
    EXPECT_EQ(std::max_element(row, row + 97) - row, tokens[i]) << "token " << i;
  }
  // Stop at the first stop token.
  options.stop_token_ids = {tokens[3]};
  std::vector<int32_t> stopped;
  finish = GenerateOne(*model_, *memory_, RandomIds(7, 8, 97), options,
                       [&](const SampledToken& t) { stopped.push_back(t.id); });
  ASSERT_TRUE(finish.ok());
  EXPECT_EQ(*finish, FinishReason::kStop);
  const auto first = std::find(tokens.begin(), tokens.end(), tokens[3]);
  EXPECT_EQ(stopped, std::vector<int32_t>(tokens.begin(), first + 1));
}

}  // namespace
}  // namespace jetserve
