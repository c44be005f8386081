// GPU sampling against engine/sampler semantics: greedy ids and log-probabilities equal the
// CPU's, penalties and bans change the greedy pick as on the CPU, filtered draws stay inside the
// CPU's kept set, and a seed reproduces its samples.
#include "kernels/cuda/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/sampler.h"
#include "gpu_test_util.h"

namespace jetserve::gpu_test {
namespace {

namespace kg = kernels::cuda;

struct Rows {
  std::vector<kg::SamplingRowDev> params;
  std::vector<kg::SampleResultDev> Run(const std::vector<float>& logits, int64_t vocab) {
    const int64_t rows = params.size();
    DeviceBuffer<float> gl(logits), scratch(rows * vocab);
    DeviceBuffer<kg::SamplingRowDev> gp(rows);
    DeviceBuffer<kg::SampleResultDev> gr(rows);
    EXPECT_EQ(cudaMemcpy(gp.get(), params.data(), rows * sizeof(kg::SamplingRowDev),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    EXPECT_TRUE(kg::SampleRows(gl.get(), rows, vocab, gp.get(), scratch.get(), gr.get(), 0).ok());
    return gr.Download();
  }
};

TEST(GpuSamplingTest, GreedyAndLogprobsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  const int64_t V = 151936;
  for (int64_t rows : {1, 33, 512}) {
    auto logits = RandomVector(rows * V, rows, -10, 10);
    Rows r;
    r.params.resize(rows);
    for (auto& p : r.params) {
      p.logprobs = 1;
      p.top_logprobs = 5;
    }
    auto got = r.Run(logits, V);
    Sampler cpu;
    SamplingParams sp;
    sp.return_logprobs = true;
    sp.top_logprobs = 5;
    for (int64_t i = 0; i < rows; ++i) {
      Xoshiro256 rng(1);
      const SampledToken want = cpu.Sample(logits.data() + i * V, V, sp, {}, rng);
      ASSERT_EQ(got[i].id, want.id) << "row " << i;
      EXPECT_NEAR(got[i].logprob, want.logprob, 1e-3);
      for (int k = 0; k < 5; ++k) {
        EXPECT_EQ(got[i].top_ids[k], want.top[k].first);
        EXPECT_NEAR(got[i].top_logprobs[k], want.top[k].second, 1e-3);
      }
    }
  }
}

TEST(GpuSamplingTest, PenaltiesBiasAndBansMatchCpuGreedy) {
  SKIP_WITHOUT_CUDA();
  const int64_t V = 1000;
  auto logits = RandomVector(V, 5, -1, 1);
  // Make the top three tokens known, then penalise/ban them.
  const int32_t top =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> rep = {top, 3, 4}, out_ids = {top, 7}, out_counts = {2, 1},
                       bias_ids = {9, 9}, banned = {11};
  std::vector<float> bias_values = {0.7f, 0.7f};
  DeviceBuffer<int32_t> grep(rep), gout(out_ids), gcounts(out_counts), gbias(bias_ids),
      gban(banned);
  DeviceBuffer<float> gbv(bias_values);
  Rows r;
  kg::SamplingRowDev p;
  p.repetition_penalty = 1.5f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.rep_ids = grep.get();
  p.n_rep = 3;
  p.out_ids = gout.get();
  p.out_counts = gcounts.get();
  p.n_out = 2;
  p.bias_ids = gbias.get();
  p.bias_values = gbv.get();
  p.n_bias = 2;
  p.banned = gban.get();
  p.n_banned = 1;
  r.params = {p};
  auto got = r.Run(logits, V);

  SamplingParams sp;
  sp.repetition_penalty = 1.5f;
  sp.presence_penalty = 0.5f;
  sp.frequency_penalty = 0.25f;
  sp.logit_bias = {{9, 0.7f}, {9, 0.7f}};
  std::vector<int32_t> prompt = {3, 4, top};
  std::sort(prompt.begin(), prompt.end());
  TokenCounts counts = {{top, 2}, {7, 1}};
  SamplingContext ctx{prompt, &counts, banned};
  Sampler cpu;
  Xoshiro256 rng(1);
  EXPECT_EQ(got[0].id, cpu.Sample(logits.data(), V, sp, ctx, rng).id);
}

TEST(GpuSamplingTest, FilteredDrawsStayInTheKeptSetAndAreSeeded) {
  SKIP_WITHOUT_CUDA();
  const int64_t V = 151936, rows = 64;
  auto row = RandomVector(V, 9, -8, 8);
  std::vector<float> logits;
  for (int i = 0; i < rows; ++i) logits.insert(logits.end(), row.begin(), row.end());
  // The CPU's top-50 set of this row.
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 50, order.end(),
                    [&](int32_t a, int32_t b) { return row[a] > row[b]; });
  std::vector<int32_t> top50(order.begin(), order.begin() + 50);
  Rows r;
  r.params.resize(rows);
  for (int i = 0; i < rows; ++i) {
    r.params[i].temperature = 0.8f;
    r.params[i].top_k = 50;
    r.params[i].top_p = 0.9f;
    r.params[i].min_p = 0.01f;
    r.params[i].seed = 1234;
    r.params[i].step = i;
  }
  auto a = r.Run(logits, V);
  auto b = r.Run(logits, V);
  int distinct = 0;
  for (int i = 0; i < rows; ++i) {
    EXPECT_NE(std::find(top50.begin(), top50.end(), a[i].id), top50.end()) << a[i].id;
    EXPECT_EQ(a[i].id, b[i].id) << "same seed and step, same sample";
    if (i > 0 && a[i].id != a[0].id) ++distinct;
  }
  EXPECT_GT(distinct, 0) << "64 draws at temperature 0.8 all gave one token";
}

TEST(GpuSamplingTest, SeveralRowsOfParamsShareOneLogitsRow) {
  SKIP_WITHOUT_CUDA();
  const int64_t V = 5000;
  auto logits = RandomVector(2 * V, 21, -3, 3);
  Rows r;
  r.params.resize(4);
  for (int i = 0; i < 4; ++i) {
    r.params[i].logits_row = i < 2 ? 1 : 0;  // rows 0, 1 sample logits row 1; rows 2, 3 row 0
    r.params[i].logprobs = 1;
  }
  auto got = r.Run(logits, V);
  const int32_t best1 = static_cast<int32_t>(std::max_element(logits.begin() + V, logits.end()) -
                                             (logits.begin() + V));
  const int32_t best0 =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
  EXPECT_EQ(got[0].id, best1);
  EXPECT_EQ(got[1].id, best1);
  EXPECT_EQ(got[2].id, best0);
  EXPECT_EQ(got[3].id, best0);
}

}  // namespace
}  // namespace jetserve::gpu_test
