// The device sampler's input arena (engine/cuda_sample_arena.h), checked on the host: each
// row's parameters, its id lists as the sampling kernel reads them (through the row's pointers,
// after a copy of the arena to a second buffer standing in for the device), section alignment,
// and the errors. No GPU needed.
#include "engine/cuda_sample_arena.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jetserve {
namespace {

namespace kg = kernels::cuda;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using Spec = ForwardBackend::SampleSpec;

// The arena written to `host`, then copied to `device` (16-byte aligned, like cudaMalloc's);
// rows are read from the device copy, so every list pointer is followed as the kernel would.
struct Uploaded {
  std::vector<char> host;
  std::vector<char> device_storage;
  char* device = nullptr;
  const kg::SamplingRowDev& row(int64_t i) const {
    return reinterpret_cast<const kg::SamplingRowDev*>(device)[i];
  }
};

Uploaded Upload(const SampleArena& arena) {
  Uploaded u;
  u.host.assign(arena.bytes(), static_cast<char>(0x5a));  // poisoned: unwritten bytes show
  u.device_storage.assign(arena.bytes() + 16, 0);
  const auto base = reinterpret_cast<uintptr_t>(u.device_storage.data());
  u.device = u.device_storage.data() + ((16 - base % 16) % 16);
  arena.WriteTo(u.host.data(), u.device);
  std::copy(u.host.begin(), u.host.end(), u.device);
  return u;
}

std::vector<int32_t> List(const int32_t* p, int32_t n) { return std::vector<int32_t>(p, p + n); }

TEST(SampleArenaTest, ScalarParametersPerRow) {
  SamplingParams greedy;
  SamplingParams warm;
  warm.temperature = 0.7f;
  warm.top_k = 40;
  warm.top_p = 0.9f;
  warm.min_p = 0.05f;
  warm.return_logprobs = true;
  warm.top_logprobs = 3;
  SamplingParams no_logprobs = warm;
  no_logprobs.return_logprobs = false;  // top_logprobs is ignored without it
  auto spec = [](int64_t row, const SamplingParams* params, uint64_t seed, uint64_t step) {
    Spec s;
    s.row = row;
    s.params = params;
    s.seed = seed;
    s.step = step;
    return s;
  };
  const std::vector<Spec> specs = {spec(2, &greedy, 11, 0), spec(0, &warm, 12, 5),
                                   spec(0, &no_logprobs, 13, 9)};  // n > 1: rows 1, 2 share one
  auto arena = SampleArena::Pack(specs, /*kept_rows=*/3);
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_EQ(arena->rows(), 3);
  const Uploaded u = Upload(*arena);
  EXPECT_EQ(u.row(0).temperature, 0.0f);
  EXPECT_EQ(u.row(0).logits_row, 2);
  EXPECT_EQ(u.row(0).seed, 11u);
  EXPECT_EQ(u.row(0).logprobs, 0);
  EXPECT_EQ(u.row(1).temperature, 0.7f);
  EXPECT_EQ(u.row(1).top_k, 40);
  EXPECT_EQ(u.row(1).top_p, 0.9f);
  EXPECT_EQ(u.row(1).min_p, 0.05f);
  EXPECT_EQ(u.row(1).logits_row, 0);
  EXPECT_EQ(u.row(1).seed, 12u);
  EXPECT_EQ(u.row(1).step, 5u);
  EXPECT_EQ(u.row(1).logprobs, 1);
  EXPECT_EQ(u.row(1).top_logprobs, 3);
  EXPECT_EQ(u.row(2).logprobs, 0);
  EXPECT_EQ(u.row(2).top_logprobs, 0);
  EXPECT_EQ(u.row(2).step, 9u);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(u.row(i).n_rep + u.row(i).n_out + u.row(i).n_bias + u.row(i).n_banned, 0) << i;
    EXPECT_EQ(arena->row(i).logits_row, u.row(i).logits_row);
  }
}

TEST(SampleArenaTest, ListsAsTheKernelReadsThem) {
  const std::vector<int32_t> prompt = {3, 8, 15};  // sorted, distinct
  const TokenCounts counts = {{8, 2}, {21, 1}, {4, 3}};
  const std::vector<int32_t> banned = {99, 100};
  SamplingParams penalised;
  penalised.repetition_penalty = 1.3f;
  penalised.presence_penalty = 0.5f;
  penalised.logit_bias = {{7, -2.5f}, {42, 10.0f}};
  SamplingParams frequency_only;
  frequency_only.frequency_penalty = -0.25f;
  std::vector<Spec> specs(2);
  specs[0].row = 0;
  specs[0].params = &penalised;
  specs[0].context.prompt_tokens = prompt;
  specs[0].context.output_counts = &counts;
  specs[0].context.banned = banned;
  specs[1].row = 1;
  specs[1].params = &frequency_only;
  specs[1].context.prompt_tokens = prompt;
  specs[1].context.output_counts = &counts;
  auto arena = SampleArena::Pack(specs, 2);
  ASSERT_TRUE(arena.ok()) << arena.status();
  const Uploaded u = Upload(*arena);

  const kg::SamplingRowDev& r0 = u.row(0);
  // Repetition: the prompt's ids, then the output ids the prompt lacks (8 is in both).
  const std::vector<int32_t> rep = List(r0.rep_ids, r0.n_rep);
  ASSERT_EQ(rep.size(), 5u);
  EXPECT_THAT(std::vector<int32_t>(rep.begin(), rep.begin() + 3), ElementsAreArray(prompt));
  EXPECT_THAT(std::vector<int32_t>(rep.begin() + 3, rep.end()), UnorderedElementsAre(21, 4));
  // Presence: every output id with its count, pairwise.
  ASSERT_EQ(r0.n_out, 3);
  for (int32_t i = 0; i < r0.n_out; ++i) {
    EXPECT_EQ(r0.out_counts[i], counts.at(r0.out_ids[i])) << r0.out_ids[i];
  }
  EXPECT_THAT(List(r0.out_ids, r0.n_out), UnorderedElementsAre(8, 21, 4));
  ASSERT_EQ(r0.n_bias, 2);
  EXPECT_THAT(List(r0.bias_ids, r0.n_bias), ElementsAre(7, 42));
  EXPECT_EQ(r0.bias_values[0], -2.5f);
  EXPECT_EQ(r0.bias_values[1], 10.0f);
  EXPECT_THAT(List(r0.banned, r0.n_banned), ElementsAre(99, 100));

  const kg::SamplingRowDev& r1 = u.row(1);
  EXPECT_EQ(r1.n_rep, 0);  // repetition_penalty 1: no list
  ASSERT_EQ(r1.n_out, 3);  // a frequency penalty alone needs the counts too
  for (int32_t i = 0; i < r1.n_out; ++i) {
    EXPECT_EQ(r1.out_counts[i], counts.at(r1.out_ids[i]));
  }
  EXPECT_EQ(r1.n_bias, 0);
  EXPECT_EQ(r1.n_banned, 0);

  // Sections: rows, then ids, then bias values, each on 16 bytes and inside the arena.
  EXPECT_EQ(arena->ints_offset() % 16, 0u);
  EXPECT_EQ(arena->floats_offset() % 16, 0u);
  EXPECT_GE(arena->ints_offset(), 2 * sizeof(kg::SamplingRowDev));
  EXPECT_EQ(arena->bytes(), arena->floats_offset() + 2 * sizeof(float));
  const char* end = u.device + arena->bytes();
  EXPECT_LE(reinterpret_cast<const char*>(r0.banned + r0.n_banned), end);
  EXPECT_LE(reinterpret_cast<const char*>(r0.bias_values + r0.n_bias), end);
}

TEST(SampleArenaTest, RepetitionWithoutOutputYetUsesThePromptOnly) {
  const std::vector<int32_t> prompt = {1, 2};
  SamplingParams p;
  p.repetition_penalty = 1.1f;
  p.presence_penalty = 1.0f;
  std::vector<Spec> specs(1);
  specs[0].params = &p;
  specs[0].context.prompt_tokens = prompt;  // output_counts null: nothing generated yet
  auto arena = SampleArena::Pack(specs, 1);
  ASSERT_TRUE(arena.ok()) << arena.status();
  const Uploaded u = Upload(*arena);
  EXPECT_THAT(List(u.row(0).rep_ids, u.row(0).n_rep), ElementsAre(1, 2));
  EXPECT_EQ(u.row(0).n_out, 0);
}

TEST(SampleArenaTest, RejectsRowsTheForwardPassDidNotKeep) {
  SamplingParams p;
  for (int64_t row : {int64_t{-1}, int64_t{4}, int64_t{100}}) {
    std::vector<Spec> specs(1);
    specs[0].row = row;
    specs[0].params = &p;
    auto arena = SampleArena::Pack(specs, 4);
    ASSERT_FALSE(arena.ok()) << row;
    EXPECT_EQ(arena.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(arena.status().message()), HasSubstr("row " + std::to_string(row)));
  }
  std::vector<Spec> no_params(1);
  auto arena = SampleArena::Pack(no_params, 4);
  ASSERT_FALSE(arena.ok());
  EXPECT_THAT(std::string(arena.status().message()), HasSubstr("no params"));
}

TEST(SampleArenaTest, EmptySpecsPackToNothing) {
  auto arena = SampleArena::Pack({}, 0);
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_EQ(arena->rows(), 0);
  EXPECT_EQ(arena->bytes(), 0u);
}

}  // namespace
}  // namespace jetserve
