// The CPU kernels against plain double-precision loops written here from the model definition,
// on odd sizes, checking outputs and the state each kernel carries between calls.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/jet_ops.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/dtype.h"

namespace jetserve::kernels::cpu {
namespace {

std::vector<float> RandomVector(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want, double atol,
                double rtol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], atol + rtol * std::abs(want[i])) << "at index " << i;
  }
}

TEST(DTypeTest, ConversionsAreExact) {
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(-2.5f)), -2.5f);
  // Round to nearest even: 1 + 2^-8 lies halfway between two bf16 values.
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3f80);
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7e00)));
}

TEST(ThreadPoolTest, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 1000}) {
    std::vector<int> hits(n, 0);
    pool.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[i];
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPoolTest, ManyShortLoopsInARow) {
  // Back-to-back loops: workers that arrive late must neither miss a shard nor run one twice,
  // and a shard they claim must be of the loop it belongs to.
  ThreadPool pool(3);
  std::vector<int> hits(64, 0);
  for (int round = 0; round < 2000; ++round) {
    const int64_t n = 1 + round % 64;
    pool.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[i];
    });
  }
  for (int64_t i = 0; i < 64; ++i) {
    int want = 0;
    for (int round = 0; round < 2000; ++round) want += i < 1 + round % 64 ? 1 : 0;
    ASSERT_EQ(hits[i], want) << "index " << i;
  }
}

TEST(ThreadPoolTest, RunOnAllGivesEachShardItsOwnScratch) {
  ThreadPool pool(3);
  for (int64_t floats : {int64_t{100}, int64_t{40}, int64_t{5000}}) {
    std::vector<const float*> seen(3, nullptr);
    std::vector<int> ran(3, 0);
    pool.RunOnAll(10, floats, [&](int64_t shard, int64_t shards, float* scratch) {
      ASSERT_EQ(shards, 3);
      for (int64_t i = 0; i < floats; ++i) scratch[i] = static_cast<float>(shard);
      for (int64_t i = 0; i < floats; ++i) ASSERT_EQ(scratch[i], static_cast<float>(shard));
      seen[shard] = scratch;
      ++ran[shard];
    });
    EXPECT_EQ(ran, std::vector<int>({1, 1, 1}));
    EXPECT_NE(seen[0], seen[1]);
    EXPECT_NE(seen[1], seen[2]);
    EXPECT_NE(seen[0], seen[2]);
  }
}

class LinearTest : public ::testing::TestWithParam<DType> {};

TEST_P(LinearTest, MatchesDoubleReferenceOnOddSizes) {
  const DType dtype = GetParam();
  const int64_t tokens = 5, in = 67, out = 37;
  const std::vector<float> x = RandomVector(tokens * in, 1);
  const std::vector<float> wf = RandomVector(out * in, 2);
  const std::vector<float> bias = RandomVector(out, 3);
  std::vector<uint16_t> w16(out * in);
  std::vector<double> w_exact(out * in);  // the weights as the kernel will see them
  for (int64_t i = 0; i < out * in; ++i) {
    if (dtype == DType::kBF16) {
      w16[i] = FloatToBf16(wf[i]);
      w_exact[i] = Bf16ToFloat(w16[i]);
    } else if (dtype == DType::kF16) {
      // Build an exactly representable half: take bf16's top bits for the value range we use.
      const float v = std::ldexp(std::round(std::ldexp(wf[i], 10)), -10);
      const uint32_t bits = [&] {
        uint32_t b;
        std::memcpy(&b, &v, 4);
        return b;
      }();
      const uint32_t sign = (bits >> 16) & 0x8000u;
      const int exp = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
      uint16_t h = static_cast<uint16_t>(sign);
      if (v != 0.0f && exp > 0) h |= static_cast<uint16_t>((exp << 10) | ((bits >> 13) & 0x3ff));
      w16[i] = h;
      w_exact[i] = F16ToFloat(h);
    } else {
      w_exact[i] = wf[i];
    }
  }
  const WeightMatrix w{
      dtype, dtype == DType::kF32 ? static_cast<const void*>(wf.data()) : w16.data(), out, in};
  std::vector<float> y(tokens * out);
  Linear(x.data(), tokens, w, bias.data(), y.data());
  std::vector<double> want(tokens * out);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias[o];
      for (int64_t i = 0; i < in; ++i)
        acc += static_cast<double>(x[t * in + i]) * w_exact[o * in + i];
      want[t * out + o] = acc;
    }
  }
  ExpectNear(y, want, 1e-4, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, LinearTest,
                         ::testing::Values(DType::kBF16, DType::kF16, DType::kF32));

TEST(LinearTest, RowResultDoesNotDependOnBatch) {
  const int64_t in = 129, out = 33;
  const std::vector<float> x = RandomVector(9 * in, 4);
  const std::vector<float> wf = RandomVector(out * in, 5);
  const WeightMatrix w{DType::kF32, wf.data(), out, in};
  std::vector<float> all(9 * out), one(out);
  Linear(x.data(), 9, w, nullptr, all.data());
  for (int64_t t = 0; t < 9; ++t) {
    Linear(x.data() + t * in, 1, w, nullptr, one.data());
    for (int64_t o = 0; o < out; ++o) ASSERT_EQ(one[o], all[t * out + o]);  // bitwise
  }
}

TEST(ElementwiseTest, RmsNormAndRope) {
  const int64_t rows = 3, dim = 10;
  const std::vector<float> x = RandomVector(rows * dim, 6);
  const std::vector<float> w = RandomVector(dim, 7);
  std::vector<float> y(rows * dim);
  RmsNorm(x.data(), w.data(), rows, dim, 1e-6f, y.data());
  std::vector<double> want(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int64_t i = 0; i < dim; ++i) want[r * dim + i] = w[i] * x[r * dim + i] * inv;
  }
  ExpectNear(y, want, 1e-5, 1e-5);

  // RoPE: rotate-half pairs (i, i + hd/2), angle = pos * theta^(-2i/hd).
  const int64_t heads = 2, hd = 6;
  std::vector<float> q = RandomVector(2 * heads * hd, 8);
  const std::vector<float> q0 = q;
  const int32_t pos[2] = {0, 37};
  Rope(q.data(), pos, 2, heads, hd, 10000.0);
  std::vector<double> rot(q.size());
  for (int t = 0; t < 2; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        const double ang = pos[t] * std::pow(10000.0, -2.0 * i / hd);
        const double a = q0[(t * heads + h) * hd + i], b = q0[(t * heads + h) * hd + i + hd / 2];
        rot[(t * heads + h) * hd + i] = a * std::cos(ang) - b * std::sin(ang);
        rot[(t * heads + h) * hd + i + hd / 2] = b * std::cos(ang) + a * std::sin(ang);
      }
    }
  }
  ExpectNear(q, rot, 1e-5, 1e-5);
}

// Naive causal attention for one sequence, all positions in [first(p), p].
std::vector<double> NaiveAttention(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, int64_t n, int64_t qh, int64_t kvh,
                                   int64_t hd, int64_t window) {
  std::vector<double> out(n * qh * hd, 0.0);
  for (int64_t p = 0; p < n; ++p) {
    const int64_t first = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
    for (int64_t h = 0; h < qh; ++h) {
      const int64_t g = h / (qh / kvh);
      std::vector<double> s;
      double max = -1e300;
      for (int64_t j = first; j <= p; ++j) {
        double d = 0;
        for (int64_t i = 0; i < hd; ++i)
          d += static_cast<double>(q[(p * qh + h) * hd + i]) * k[(j * kvh + g) * hd + i];
        s.push_back(d / std::sqrt(static_cast<double>(hd)));
        max = std::max(max, s.back());
      }
      double sum = 0;
      for (double& e : s) sum += (e = std::exp(e - max));
      for (int64_t j = first; j <= p; ++j) {
        for (int64_t i = 0; i < hd; ++i) {
          out[(p * qh + h) * hd + i] += s[j - first] / sum * v[(j * kvh + g) * hd + i];
        }
      }
    }
  }
  return out;
}

TEST(AttentionTest, PagedAttentionInChunksMatchesNaive) {
  const int64_t n = 23, qh = 6, kvh = 2, hd = 10, page = 4;
  const std::vector<float> q = RandomVector(n * qh * hd, 9), k = RandomVector(n * kvh * hd, 10),
                           v = RandomVector(n * kvh * hd, 11);
  const std::vector<double> want = NaiveAttention(q, k, v, n, qh, kvh, hd, 0);
  // Pages handed out out of order, to exercise the block table.
  const std::vector<int32_t> table = {5, 0, 3, 1, 4, 2};
  std::vector<float> kp(6 * page * kvh * hd), vp(kp.size()), out(n * qh * hd);
  const AttentionShape shape{qh, kvh, hd};
  for (int64_t start : {int64_t{0}, int64_t{9}, int64_t{10}, int64_t{17}}) {
    const int64_t end = start == 0 ? 9 : start == 9 ? 10 : start == 10 ? 17 : n;
    AttentionSeq s{0, end - start, start, table.data(), nullptr, nullptr};
    PagedAttention(q.data() + start * qh * hd, k.data() + start * kvh * hd,
                   v.data() + start * kvh * hd, &s, 1, shape, page, kp.data(), vp.data(),
                   out.data() + start * qh * hd);
  }
  ExpectNear(out, want, 1e-5, 1e-4);
}

TEST(AttentionTest, WindowAttentionWithChunksLongerThanTheWindow) {
  const int64_t n = 31, qh = 3, kvh = 1, hd = 8, window = 5;
  const std::vector<float> q = RandomVector(n * qh * hd, 12), k = RandomVector(n * kvh * hd, 13),
                           v = RandomVector(n * kvh * hd, 14);
  const std::vector<double> want = NaiveAttention(q, k, v, n, qh, kvh, hd, window);
  std::vector<float> kr(window * kvh * hd), vr(kr.size()), out(n * qh * hd);
  const AttentionShape shape{qh, kvh, hd};
  // Chunks of 12 (> window), 1, 18.
  const int64_t bounds[] = {0, 12, 13, n};
  for (int c = 0; c < 3; ++c) {
    AttentionSeq s{0, bounds[c + 1] - bounds[c], bounds[c], nullptr, kr.data(), vr.data()};
    WindowAttention(q.data() + bounds[c] * qh * hd, k.data() + bounds[c] * kvh * hd,
                    v.data() + bounds[c] * kvh * hd, &s, 1, shape, window,
                    out.data() + bounds[c] * qh * hd);
  }
  ExpectNear(out, want, 1e-5, 1e-4);
}

TEST(AttentionTest, LongContextsSpanSeveralSoftmaxBlocks) {
  // More keys than one block of the streaming softmax (128), with scores that grow along the
  // sequence so later blocks raise the running max and earlier ones must be rescaled.
  const int64_t n = 300, qh = 4, kvh = 2, hd = 8, page = 16;
  std::vector<float> q = RandomVector(n * qh * hd, 30), k = RandomVector(n * kvh * hd, 31);
  const std::vector<float> v = RandomVector(n * kvh * hd, 32);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < kvh * hd; ++i) k[j * kvh * hd + i] *= 1.0f + 4.0f * j / n;
  }
  const std::vector<double> want = NaiveAttention(q, k, v, n, qh, kvh, hd, 0);
  std::vector<int32_t> table((n + page - 1) / page);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(table.size() - 1 - i);
  std::vector<float> kp(table.size() * page * kvh * hd), vp(kp.size()), out(n * qh * hd);
  const AttentionShape shape{qh, kvh, hd};
  const int64_t bounds[] = {0, 150, 151, n};
  for (int c = 0; c < 3; ++c) {
    AttentionSeq s{0, bounds[c + 1] - bounds[c], bounds[c], table.data(), nullptr, nullptr};
    PagedAttention(q.data() + bounds[c] * qh * hd, k.data() + bounds[c] * kvh * hd,
                   v.data() + bounds[c] * kvh * hd, &s, 1, shape, page, kp.data(), vp.data(),
                   out.data() + bounds[c] * qh * hd);
  }
  ExpectNear(out, want, 1e-5, 1e-4);

  const int64_t window = 200;
  const std::vector<double> want_window = NaiveAttention(q, k, v, n, qh, kvh, hd, window);
  std::vector<float> kr(window * kvh * hd), vr(kr.size());
  for (int c = 0; c < 3; ++c) {
    AttentionSeq s{0, bounds[c + 1] - bounds[c], bounds[c], nullptr, kr.data(), vr.data()};
    WindowAttention(q.data() + bounds[c] * qh * hd, k.data() + bounds[c] * kvh * hd,
                    v.data() + bounds[c] * kvh * hd, &s, 1, shape, window,
                    out.data() + bounds[c] * qh * hd);
  }
  ExpectNear(out, want_window, 1e-5, 1e-4);

  // Groups of 6 query heads per kv head and head_dim 16: the vector score path in two groups
  // of heads.
  const int64_t n2 = 150, qh2 = 12, kvh2 = 2, hd2 = 16;
  const std::vector<float> q2 = RandomVector(n2 * qh2 * hd2, 33),
                           k2 = RandomVector(n2 * kvh2 * hd2, 34),
                           v2 = RandomVector(n2 * kvh2 * hd2, 35);
  const std::vector<double> want2 = NaiveAttention(q2, k2, v2, n2, qh2, kvh2, hd2, 0);
  std::vector<float> kp2(table.size() * page * kvh2 * hd2), vp2(kp2.size()), out2(n2 * qh2 * hd2);
  AttentionSeq s2{0, n2, 0, table.data(), nullptr, nullptr};
  PagedAttention(q2.data(), k2.data(), v2.data(), &s2, 1, AttentionShape{qh2, kvh2, hd2}, page,
                 kp2.data(), vp2.data(), out2.data());
  ExpectNear(out2, want2, 1e-5, 1e-4);
}

TEST(JetOpsTest, DynamicConvCarriesItsTail) {
  const JetShape shape{2, 3, 5, 4};  // channels = 10, W = 4
  const int64_t n = 9, c = shape.channels(), w = shape.conv_size;
  const std::vector<float> u = RandomVector(n * c, 15), kern = RandomVector(n * c * w, 16);
  std::vector<double> want(n * c);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t ch = 0; ch < c; ++ch) {
      double acc = 0;
      for (int64_t j = 0; j < w; ++j) {
        const int64_t src = t - w + 1 + j;
        if (src >= 0) acc += static_cast<double>(kern[(t * c + ch) * w + j]) * u[src * c + ch];
      }
      want[t * c + ch] = acc / (1 + std::exp(-acc));
    }
  }
  std::vector<float> tail((w - 1) * c, 0.0f), out(n * c);
  // Chunks 2, 1, 6: each shorter and longer than the tail.
  const int64_t bounds[] = {0, 2, 3, n};
  for (int i = 0; i < 3; ++i) {
    JetSeq s{0, bounds[i + 1] - bounds[i], nullptr, tail.data()};
    DynamicCausalConv(u.data() + bounds[i] * c, kern.data() + bounds[i] * c * w, &s, 1, shape,
                      out.data() + bounds[i] * c);
  }
  ExpectNear(out, want, 1e-5, 1e-5);
  // The tail now holds the last W-1 inputs, oldest first.
  for (int64_t j = 0; j < w - 1; ++j) {
    for (int64_t ch = 0; ch < c; ++ch) ASSERT_EQ(tail[j * c + ch], u[(n - w + 1 + j) * c + ch]);
  }
}

TEST(JetOpsTest, GatedDeltaRuleMatchesDefinitionAndCarriesState) {
  const JetShape shape{3, 5, 7, 4};
  const int64_t n = 11, H = shape.heads, dk = shape.key_dim, dv = shape.value_dim;
  const std::vector<float> q = RandomVector(n * H * dk, 17), k = RandomVector(n * H * dk, 18),
                           v = RandomVector(n * H * dv, 19);
  std::vector<float> g = RandomVector(n * H, 20, 1.0f), beta = RandomVector(n * H, 21, 0.5f);
  for (float& x : g) x = -std::abs(x);
  for (float& x : beta) x = 0.5f + x;
  std::vector<double> S(H * dk * dv, 0.0), want(n * H * dv);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      double* s = &S[h * dk * dv];
      const double decay = std::exp(static_cast<double>(g[t * H + h]));
      for (int64_t i = 0; i < dk * dv; ++i) s[i] *= decay;
      for (int64_t j = 0; j < dv; ++j) {
        double sk = 0;
        for (int64_t i = 0; i < dk; ++i) sk += s[i * dv + j] * k[(t * H + h) * dk + i];
        const double e = beta[t * H + h] * (v[(t * H + h) * dv + j] - sk);
        for (int64_t i = 0; i < dk; ++i) s[i * dv + j] += k[(t * H + h) * dk + i] * e;
      }
      for (int64_t j = 0; j < dv; ++j) {
        double o = 0;
        for (int64_t i = 0; i < dk; ++i) o += s[i * dv + j] * q[(t * H + h) * dk + i];
        want[(t * H + h) * dv + j] = o;
      }
    }
  }
  std::vector<float> state(H * dk * dv, 0.0f), out(n * H * dv);
  const int64_t bounds[] = {0, 1, 7, n};
  for (int i = 0; i < 3; ++i) {
    const int64_t b = bounds[i];
    JetSeq s{0, bounds[i + 1] - b, state.data(), nullptr};
    GatedDeltaRule(q.data() + b * H * dk, k.data() + b * H * dk, v.data() + b * H * dv,
                   g.data() + b * H, beta.data() + b * H, &s, 1, shape, out.data() + b * H * dv);
  }
  ExpectNear(out, want, 1e-4, 1e-4);
  ExpectNear(state, S, 1e-4, 1e-4);
}

TEST(JetOpsTest, GatesAndGatedNorm) {
  std::vector<float> a = {0.3f, -25.0f, 30.0f}, b = {0.0f, 2.0f, -1.0f};
  const std::vector<float> a_log = {0.5f, 0.0f, -1.0f}, dt_bias = {0.1f, 0.2f, -0.3f};
  JetGates(a.data(), b.data(), a_log.data(), dt_bias.data(), 1, 3);
  EXPECT_NEAR(a[0], -std::exp(0.5) * std::log1p(std::exp(0.4)), 1e-6);
  EXPECT_NEAR(a[1], -std::log1p(std::exp(-24.8)), 1e-12);
  EXPECT_NEAR(a[2], -std::exp(-1.0) * 29.7, 1e-4);  // softplus is linear past 20
  EXPECT_NEAR(b[0], 0.5, 1e-7);
  EXPECT_NEAR(b[1], 1.0 / (1.0 + std::exp(-2.0)), 1e-7);

  std::vector<float> o = RandomVector(2 * 4, 22);
  const std::vector<float> gate = RandomVector(2 * 4, 23), w = RandomVector(4, 24);
  std::vector<double> want(8);
  for (int r = 0; r < 2; ++r) {
    double ss = 0;
    for (int i = 0; i < 4; ++i) ss += static_cast<double>(o[r * 4 + i]) * o[r * 4 + i];
    for (int i = 0; i < 4; ++i) {
      const double gi = gate[r * 4 + i];
      want[r * 4 + i] = w[i] * o[r * 4 + i] / std::sqrt(ss / 4 + 1e-5) * gi / (1 + std::exp(-gi));
    }
  }
  GatedRmsNorm(o.data(), gate.data(), w.data(), 1, 2, 4, 1e-5f);
  ExpectNear(o, want, 1e-5, 1e-5);
}

}  // namespace
}  // namespace jetserve::kernels::cpu
