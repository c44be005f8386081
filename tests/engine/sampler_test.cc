// Sampling rules on hand-made logits.
#include "engine/sampler.h"

#include <cmath>
#include <map>
#include <set>

#include "gtest/gtest.h"

namespace jetserve {
namespace {

TEST(SamplerTest, GreedyPicksArgmaxAndReportsModelLogprobs) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.0f};
  Rng rng(1);
  std::vector<float> scratch;
  SamplingParams p;
  p.logprobs = 3;
  const SampledToken t = Sample(logits.data(), 4, p, rng, scratch);
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

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  const std::vector<float> logits = {0.1f, 0.3f, 0.2f, 0.25f};
  std::vector<float> scratch;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    Rng rng(seed);
    SamplingParams k1{1.0f, 1, 1.0f, seed, 0};
    EXPECT_EQ(Sample(logits.data(), 4, k1, rng, scratch).id, 1);
    SamplingParams p0{1.0f, 0, 1e-6f, seed, 0};
    EXPECT_EQ(Sample(logits.data(), 4, p0, rng, scratch).id, 1);
  }
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1}; 0.85 keeps {0, 1, 2}.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  std::vector<float> scratch;
  for (auto [top_p, allowed] : std::vector<std::pair<float, std::set<int>>>{
           {0.7f, {0, 1}}, {0.85f, {0, 1, 2}}, {0.5f, {0}}}) {
    std::set<int> seen;
    for (uint64_t seed = 0; seed < 400; ++seed) {
      Rng rng(seed);
      SamplingParams p{1.0f, 0, top_p, seed, 0};
      seen.insert(Sample(logits.data(), 4, p, rng, scratch).id);
    }
    EXPECT_EQ(seen, allowed) << "top_p " << top_p;
  }
}

TEST(SamplerTest, SameSeedSameSamples) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 1.3f);
  std::vector<float> scratch;
  std::vector<int32_t> a, b;
  Rng r1(42), r2(42);
  SamplingParams p{0.8f, 0, 1.0f, 42, 0};
  for (int i = 0; i < 20; ++i) {
    a.push_back(Sample(logits.data(), 50, p, r1, scratch).id);
    b.push_back(Sample(logits.data(), 50, p, r2, scratch).id);
  }
  EXPECT_EQ(a, b);
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 3u);
}

TEST(SamplerTest, TemperatureOneFollowsSoftmax) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  std::vector<float> scratch;
  std::map<int, int> counts;
  const int n = 30000;
  Rng rng(7);
  SamplingParams p{1.0f, 0, 1.0f, 7, 0};
  for (int i = 0; i < n; ++i) counts[Sample(logits.data(), 3, p, rng, scratch).id]++;
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  double chi2 = 0;
  for (int i = 0; i < 3; ++i) {
    const double expected = n * std::exp(logits[i]) / z;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 13.8) << "chi-square with 2 degrees of freedom, p = 0.001";
}

TEST(SamplerTest, ValidationNamesTheField) {
  SamplingParams p;
  p.temperature = NAN;
  EXPECT_NE(ValidateSamplingParams(p, 20).message().find("temperature"), std::string::npos);
  p = {};
  p.temperature = -1;
  EXPECT_FALSE(ValidateSamplingParams(p, 20).ok());
  p = {};
  p.top_p = 0.0f;
  EXPECT_NE(ValidateSamplingParams(p, 20).message().find("top_p"), std::string::npos);
  p = {};
  p.top_p = 1.5f;
  EXPECT_FALSE(ValidateSamplingParams(p, 20).ok());
  p = {};
  p.top_k = -1;
  EXPECT_NE(ValidateSamplingParams(p, 20).message().find("top_k"), std::string::npos);
  p = {};
  p.logprobs = 21;
  EXPECT_NE(ValidateSamplingParams(p, 20).message().find("logprobs"), std::string::npos);
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, 20).ok());
}

}  // namespace
}  // namespace jetserve
