// The vector paths of Linear (AVX2, AVX-512 BF16) against the portable reference path on odd
// sizes, and the property the engine relies on: a token's outputs are bitwise the same whatever
// batch it is in, wherever it sits in it, and however many threads run the call.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/dtype.h"

namespace jetserve::kernels::cpu {
namespace {

std::vector<float> RandomVector(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A weight matrix of the given dtype holding values exactly representable in it.
struct TestWeights {
  std::vector<uint16_t> w16;
  std::vector<float> w32;
  WeightMatrix matrix;
};

TestWeights MakeWeights(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  TestWeights t;
  const std::vector<float> wf = RandomVector(rows * cols, seed);
  if (dtype == DType::kF32) {
    t.w32 = wf;
    t.matrix = {dtype, t.w32.data(), rows, cols};
    return t;
  }
  t.w16.resize(wf.size());
  for (size_t i = 0; i < wf.size(); ++i) {
    if (dtype == DType::kBF16) {
      t.w16[i] = FloatToBf16(wf[i]);
    } else {
      // Multiples of 2^-10 in (-1, 1) are exact halves: sign, exponent, 10-bit mantissa.
      const float v = std::ldexp(std::round(std::ldexp(wf[i], 10)), -10);
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      const int exp = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
      uint16_t h = static_cast<uint16_t>((bits >> 16) & 0x8000u);
      if (v != 0.0f && exp > 0) h |= static_cast<uint16_t>((exp << 10) | ((bits >> 13) & 0x3ff));
      t.w16[i] = h;
    }
  }
  t.matrix = {dtype, t.w16.data(), rows, cols};
  return t;
}

struct Case {
  Isa isa;
  DType dtype;
};

class LinearPathTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (SetActiveIsa(GetParam().isa) != GetParam().isa) {
      SetActiveIsa(DetectedIsa());
      GTEST_SKIP() << "this CPU cannot run the " << IsaName(GetParam().isa)
                   << " path (best: " << IsaName(DetectedIsa()) << ")";
    }
  }
  void TearDown() override { SetActiveIsa(DetectedIsa()); }
};

TEST_P(LinearPathTest, MatchesReferenceOnOddSizes) {
  ThreadPool pool(3);
  const Isa isa = GetParam().isa;
  for (int64_t k : {1, 7, 8, 9, 31, 33, 97, 1030}) {
    // 203 rows: single-token row blocks of several strided runs plus a ragged rest.
    for (int64_t n : {1, 5, 9, 33, 70, 203}) {
      for (int64_t m : {1, 2, 3, 4, 17, 50}) {
        const TestWeights w = MakeWeights(GetParam().dtype, n, k, static_cast<uint32_t>(k * n));
        const std::vector<float> x = RandomVector(m * k, static_cast<uint32_t>(m + 7 * k));
        const std::vector<float> bias = RandomVector(n, 3);
        std::vector<float> got(m * n), want(m * n);
        SetActiveIsa(isa);
        LinearOn(pool, x.data(), m, w.matrix, bias.data(), got.data());
        LinearReference(pool, x.data(), m, w.matrix, bias.data(), want.data());
        for (int64_t i = 0; i < m * n; ++i) {
          // Sums of k products of magnitude <= 1: fused vs separate rounding differs by a few
          // ulps of the partial sums.
          ASSERT_NEAR(got[i], want[i], 2e-6 * static_cast<double>(k) + 1e-6)
              << "m=" << m << " n=" << n << " k=" << k << " at " << i;
        }
      }
    }
  }
}

// A token's outputs alone, in a batch of 4 at each slot, and with 1 or 3 threads: all bitwise
// equal to its row of one batched call.
void ExpectTokenResultIndependentOfBatchAndThreads(DType dtype, int64_t n) {
  const int64_t k = 1100, m = 53;
  const TestWeights w = MakeWeights(dtype, n, k, 11);
  const std::vector<float> x = RandomVector(m * k, 12);
  ThreadPool one(1), three(3);
  std::vector<float> all(m * n);
  LinearOn(three, x.data(), m, w.matrix, nullptr, all.data());
  std::vector<float> again(m * n);
  LinearOn(one, x.data(), m, w.matrix, nullptr, again.data());
  ASSERT_EQ(0, std::memcmp(all.data(), again.data(), all.size() * 4)) << "1 vs 3 threads";
  // Each token alone, and inside batches of 2, 3 (the small-batch path, like alone) and 4 (the
  // tiled path) at every position of the batch.
  std::vector<float> out(4 * n), batch(4 * k);
  for (int64_t t = 0; t < m; ++t) {
    LinearOn(three, x.data() + t * k, 1, w.matrix, nullptr, out.data());
    ASSERT_EQ(0, std::memcmp(out.data(), all.data() + t * n, n * 4)) << "token " << t << " alone";
    for (const int64_t size : {2, 3, 4}) {
      const int64_t slot = t % size;
      for (int64_t s = 0; s < size; ++s) {
        const int64_t src = s == slot ? t : (t + s + 1) % m;
        std::memcpy(batch.data() + s * k, x.data() + src * k, k * 4);
      }
      LinearOn(size == 3 ? three : one, batch.data(), size, w.matrix, nullptr, out.data());
      ASSERT_EQ(0, std::memcmp(out.data() + slot * n, all.data() + t * n, n * 4))
          << "token " << t << " at slot " << slot << " of " << size;
    }
  }
}

TEST_P(LinearPathTest, TokenResultIsBitwiseIndependentOfBatchAndThreads) {
  // Several K blocks, ragged tiles everywhere; 613 rows make a token alone run the strided
  // single-token path with runs of 6 and 7 rows and a ragged rest.
  for (const int64_t n : {75, 613}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    ASSERT_NO_FATAL_FAILURE(ExpectTokenResultIndependentOfBatchAndThreads(GetParam().dtype, n));
  }
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return std::string(IsaName(info.param.isa)) + "_" + std::string(DTypeName(info.param.dtype));
}

INSTANTIATE_TEST_SUITE_P(AllPaths, LinearPathTest,
                         ::testing::Values(Case{Isa::kScalar, DType::kBF16},
                                           Case{Isa::kAvx2, DType::kBF16},
                                           Case{Isa::kAvx2, DType::kF16},
                                           Case{Isa::kAvx2, DType::kF32},
                                           Case{Isa::kAvx512Bf16, DType::kBF16}),
                         CaseName);

TEST(CpuFeaturesTest, ActiveNeverExceedsDetected) {
  EXPECT_LE(static_cast<int>(ActiveIsa()), static_cast<int>(DetectedIsa()));
  EXPECT_EQ(SetActiveIsa(Isa::kAvx512Bf16),
            DetectedIsa() == Isa::kAvx512Bf16 ? Isa::kAvx512Bf16 : DetectedIsa());
  EXPECT_EQ(SetActiveIsa(Isa::kScalar), Isa::kScalar);
  SetActiveIsa(DetectedIsa());
}

}  // namespace
}  // namespace jetserve::kernels::cpu
