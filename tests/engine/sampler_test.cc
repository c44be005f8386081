// Sampling rules on hand-made logits: each filter keeps exactly the set its definition says,
// penalties and bias move exactly the logits they name, seeded draws repeat, and the empirical
// distribution at temperature 1 matches softmax(logits) (chi-square with fixed seeds).
#include "engine/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "gtest/gtest.h"

namespace jetserve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The set of ids drawn over `draws` seeds.
std::set<int32_t> Support(const std::vector<float>& logits, const SamplingParams& p,
                          const SamplingContext& ctx = {}, int draws = 600) {
  Sampler sampler;
  std::set<int32_t> seen;
  for (int seed = 0; seed < draws; ++seed) {
    Rng rng(seed);
    seen.insert(sampler.Sample(logits.data(), logits.size(), p, ctx, rng).id);
  }
  return seen;
}

SamplingParams Temp(float t) {
  SamplingParams p;
  p.temperature = t;
  return p;
}

// Chi-square statistic of observed counts against expected probabilities.
double ChiSquare(const std::map<int32_t, int>& counts, const std::vector<double>& probs, int n) {
  double chi2 = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    const double expected = n * probs[i];
    const double observed = counts.count(i) ? counts.at(i) : 0;
    chi2 += (observed - expected) * (observed - expected) / expected;
  }
  return chi2;
}

TEST(SamplerTest, GreedyPicksArgmaxAndReportsModelLogprobs) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.0f};
  Sampler sampler;
  Rng rng(1);
  SamplingParams p;
  p.return_logprobs = true;
  p.top_logprobs = 3;
  const SampledToken t = sampler.Sample(logits.data(), 4, p, {}, rng);
  EXPECT_EQ(t.id, 1);
  double z = 0;
  for (float l : logits) z += std::exp(l);
  EXPECT_NEAR(t.logprob, 2.0 - std::log(z), 1e-6);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 1);
  EXPECT_EQ(t.top[1].first, 3);
  EXPECT_EQ(t.top[2].first, 0);
  EXPECT_NEAR(t.top[2].second, 0.5 - std::log(z), 1e-6);
}

TEST(SamplerTest, GreedyTiesGoToTheLowestId) {
  const std::vector<float> logits = {0.0f, 3.0f, 3.0f, 1.0f};
  EXPECT_EQ(Support(logits, Temp(0)), std::set<int32_t>({1}));
}

TEST(SamplerTest, LogprobsAreOfTheUnmodifiedModel) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  Sampler sampler;
  Rng rng(3);
  SamplingParams p = Temp(0.5f);
  p.return_logprobs = true;
  p.logit_bias = {{0, 50.0f}};  // forces id 0, but its reported logprob is the model's
  const SampledToken t = sampler.Sample(logits.data(), 3, p, {}, rng);
  EXPECT_EQ(t.id, 0);
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  EXPECT_NEAR(t.logprob, -std::log(z), 1e-6);
  EXPECT_TRUE(t.top.empty());
}

TEST(SamplerTest, TopKKeepsExactlyTheKMostLikely) {
  const std::vector<float> logits = {0.1f, 0.9f, 0.5f, 0.7f, 0.3f};
  SamplingParams p = Temp(5.0f);  // flat: every kept id shows up
  p.top_k = 3;
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({1, 2, 3}));
  p.top_k = 1;
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({1}));
  p.top_k = 5;
  EXPECT_EQ(Support(logits, p).size(), 5u);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1}; 0.85 keeps {0, 1, 2}; 0.5 {0}.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  for (auto [top_p, allowed] : std::vector<std::pair<float, std::set<int32_t>>>{
           {0.7f, {0, 1}}, {0.85f, {0, 1, 2}}, {0.5f, {0}}, {0.96f, {0, 1, 2, 3}}}) {
    SamplingParams p = Temp(1.0f);
    p.top_p = top_p;
    EXPECT_EQ(Support(logits, p), allowed) << "top_p " << top_p;
  }
}

TEST(SamplerTest, TopPOverALargeVocabularySortsOnlyWhatItNeeds) {
  // 5000 ids; the first 100 hold ~all the mass. top_p 0.5 must keep exactly the heaviest ids
  // whose mass reaches half, and the draw must come from them.
  std::vector<float> logits(5000, -30.0f);
  std::vector<double> probs;
  for (int i = 0; i < 100; ++i) logits[i * 37 % 5000] = -0.05f * i;
  SamplingParams p = Temp(1.0f);
  p.top_p = 0.5f;
  // Expected set: the heaviest ids in order until their mass reaches 0.5.
  double z = 0;
  for (float l : logits) z += std::exp(l);
  std::set<int32_t> expected;
  double cum = 0;
  for (int i = 0; i < 100 && cum < 0.5; ++i) {
    cum += std::exp(logits[i * 37 % 5000]) / z;
    expected.insert(i * 37 % 5000);
  }
  EXPECT_EQ(Support(logits, p, {}, 3000), expected);
}

TEST(SamplerTest, TopPAppliesWithinTopK) {
  // top_k 2 keeps {0 (0.5), 1 (0.3)}; renormalised 0.625 / 0.375; top_p 0.6 keeps {0} alone.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p = Temp(1.0f);
  p.top_k = 2;
  p.top_p = 0.6f;
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({0}));
  p.top_p = 0.7f;
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({0, 1}));
}

TEST(SamplerTest, MinPKeepsTokensAtLeastMinPTimesTheMostLikely) {
  // Probabilities 0.4, 0.3, 0.2, 0.1 (thresholds chosen away from ties, which float rounding
  // could decide either way).
  const std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f),
                                     std::log(0.1f)};
  SamplingParams p = Temp(1.0f);
  p.min_p = 0.45f;  // keeps >= 0.18: {0, 1, 2}
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({0, 1, 2}));
  p.min_p = 0.55f;  // keeps >= 0.22: {0, 1}
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({0, 1}));
  p.min_p = 0.76f;  // keeps >= 0.304: {0}
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({0}));
  p.min_p = 0.74f;  // keeps >= 0.296: {0, 1}
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({0, 1}));
}

TEST(SamplerTest, TemperatureSharpensAndFlattens) {
  // At temperature 0.25 the probabilities are proportional to p^4.
  const std::vector<float> logits = {0.0f, std::log(2.0f)};
  Sampler sampler;
  const int n = 20000;
  std::map<int32_t, int> counts;
  SamplingParams p = Temp(0.25f);
  for (int seed = 0; seed < n; ++seed) {
    Rng rng(seed);
    counts[sampler.Sample(logits.data(), 2, p, {}, rng).id]++;
  }
  EXPECT_LT(ChiSquare(counts, {1.0 / 17, 16.0 / 17}, n), 10.83) << "1 dof, p = 0.001";
}

TEST(SamplerTest, TemperatureOneMatchesSoftmaxChiSquare) {
  // 8 ids, many seeds (one draw per seed, as separate requests would): the empirical
  // distribution must match softmax(logits). Fixed seeds: the outcome is deterministic.
  const std::vector<float> logits = {1.2f, -0.3f, 0.0f, 2.1f, 0.7f, -1.5f, 0.2f, 1.0f};
  double z = 0;
  for (float l : logits) z += std::exp(l);
  std::vector<double> probs;
  for (float l : logits) probs.push_back(std::exp(l) / z);
  Sampler sampler;
  const int n = 40000;
  std::map<int32_t, int> counts;
  SamplingParams p = Temp(1.0f);
  for (int seed = 0; seed < n; ++seed) {
    Rng rng(1000003ull * seed + 17);
    counts[sampler.Sample(logits.data(), 8, p, {}, rng).id]++;
  }
  EXPECT_LT(ChiSquare(counts, probs, n), 24.32) << "7 dof, p = 0.001";
  // And a filtered path (top_k = vocab, min_p tiny) follows the same distribution.
  p.top_k = 8;
  p.min_p = 1e-6f;
  counts.clear();
  for (int seed = 0; seed < n; ++seed) {
    Rng rng(1000003ull * seed + 17);
    counts[sampler.Sample(logits.data(), 8, p, {}, rng).id]++;
  }
  EXPECT_LT(ChiSquare(counts, probs, n), 24.32) << "7 dof, p = 0.001 (filtered path)";
}

TEST(SamplerTest, SameSeedSameSamples) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 1.3f);
  Sampler s1, s2;
  std::vector<int32_t> a, b;
  Rng r1(42), r2(42);
  SamplingParams p = Temp(0.8f);
  p.top_p = 0.9f;
  for (int i = 0; i < 20; ++i) {
    a.push_back(s1.Sample(logits.data(), 50, p, {}, r1).id);
    b.push_back(s2.Sample(logits.data(), 50, p, {}, r2).id);
  }
  EXPECT_EQ(a, b);
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 3u);
}

TEST(SamplerTest, LogitBiasShiftsExactlyTheNamedLogits) {
  const std::vector<float> logits = {3.0f, 1.0f, 0.0f};
  SamplingParams p = Temp(0);
  p.logit_bias = {{2, 3.5f}};
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({2}));  // 3.5 > 3
  p.logit_bias = {{2, 2.5f}};
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({0}));
  p.logit_bias = {{0, -100.0f}};
  EXPECT_EQ(Support(logits, p), std::set<int32_t>({1}));
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesFollowTheOpenAiFormula) {
  // logit - presence * [count > 0] - frequency * count, on output tokens only.
  const std::vector<float> logits = {2.0f, 1.5f, 0.0f};
  const TokenCounts counts = {{0, 3}};
  SamplingContext ctx;
  ctx.output_counts = &counts;
  SamplingParams p = Temp(0);
  p.presence_penalty = 0.4f;  // 2 - 0.4 = 1.6 > 1.5
  EXPECT_EQ(Support(logits, p, ctx), std::set<int32_t>({0}));
  p.presence_penalty = 0.6f;  // 1.4 < 1.5
  EXPECT_EQ(Support(logits, p, ctx), std::set<int32_t>({1}));
  p.presence_penalty = 0.0f;
  p.frequency_penalty = 0.15f;  // 2 - 0.45 = 1.55 > 1.5
  EXPECT_EQ(Support(logits, p, ctx), std::set<int32_t>({0}));
  p.frequency_penalty = 0.2f;  // 2 - 0.6 = 1.4
  EXPECT_EQ(Support(logits, p, ctx), std::set<int32_t>({1}));
  p.frequency_penalty = -0.5f;  // negative: encourages repetition
  const std::vector<float> other = {1.0f, 2.0f, 0.0f};
  EXPECT_EQ(Support(other, p, ctx), std::set<int32_t>({0}));  // 1 + 1.5 > 2
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  // Prompt holds id 0 (logit 3 -> 1.5 at penalty 2); output holds id 2 (logit -1 -> -2).
  const std::vector<float> logits = {3.0f, 2.0f, -1.0f, -1.5f};
  const std::vector<int32_t> prompt = {0};
  const TokenCounts counts = {{2, 1}};
  SamplingContext ctx;
  ctx.prompt_tokens = prompt;
  ctx.output_counts = &counts;
  SamplingParams p = Temp(0);
  p.repetition_penalty = 2.0f;
  EXPECT_EQ(Support(logits, p, ctx), std::set<int32_t>({1}));
  // Ban id 1 and 0's penalised 1.5 still wins over 2's -2 and 3's -1.5... check the order of
  // the rest: ids 0 (1.5), 3 (-1.5), 2 (-2).
  const std::vector<int32_t> banned = {0, 1};
  ctx.banned = banned;
  EXPECT_EQ(Support(logits, p, ctx), std::set<int32_t>({3}));  // -1.5 beats penalised -2
  p.repetition_penalty = 1.0f;
  EXPECT_EQ(Support(logits, p, ctx), std::set<int32_t>({2}));  // unpenalised -1 beats -1.5
}

TEST(SamplerTest, BannedIdsAreNeverDrawn) {
  const std::vector<float> logits = {5.0f, 0.0f, 0.0f};
  const std::vector<int32_t> banned = {0};
  SamplingContext ctx;
  ctx.banned = banned;
  EXPECT_EQ(Support(logits, Temp(1.0f), ctx), std::set<int32_t>({1, 2}));
  EXPECT_EQ(Support(logits, Temp(0), ctx), std::set<int32_t>({1}));
}

TEST(SamplerTest, ValidationNamesTheFieldAndTheLimit) {
  auto message = [](SamplingParams p) {
    return std::string(ValidateSamplingParams(p, 100, 20, "sampling.").message());
  };
  SamplingParams p;
  EXPECT_TRUE(ValidateSamplingParams(p, 100, 20).ok());
  p.temperature = NAN;
  EXPECT_NE(message(p).find("sampling.temperature: nan"), std::string::npos) << message(p);
  p = {};
  p.temperature = -kInf;
  EXPECT_NE(message(p).find("sampling.temperature"), std::string::npos);
  p = {};
  p.top_p = 0.0f;
  EXPECT_NE(message(p).find("sampling.top_p: 0 is outside (0, 1]"), std::string::npos);
  p = {};
  p.top_k = 101;
  EXPECT_NE(message(p).find("sampling.top_k: 101 is outside [0, 100]"), std::string::npos);
  p = {};
  p.min_p = 1.5f;
  EXPECT_NE(message(p).find("sampling.min_p"), std::string::npos);
  p = {};
  p.repetition_penalty = 0.0f;
  EXPECT_NE(message(p).find("sampling.repetition_penalty"), std::string::npos);
  p = {};
  p.presence_penalty = 2.5f;
  EXPECT_NE(message(p).find("sampling.presence_penalty: 2.5 is outside [-2, 2]"),
            std::string::npos);
  p = {};
  p.frequency_penalty = NAN;
  EXPECT_NE(message(p).find("sampling.frequency_penalty"), std::string::npos);
  p = {};
  p.logit_bias = {{100, 1.0f}};
  EXPECT_NE(message(p).find("sampling.logit_bias: token id 100"), std::string::npos);
  p.logit_bias = {{5, 101.0f}};
  EXPECT_NE(message(p).find("[-100, 100]"), std::string::npos);
  p = {};
  p.top_logprobs = 21;
  EXPECT_NE(message(p).find("sampling.logprobs: 21 is outside [0, 20]"), std::string::npos);
}

}  // namespace
}  // namespace jetserve
