// Each CUDA op against its kernels/cpu reference on odd sizes, batch sizes 1 / 33 / 512 and
// chunk boundaries that do not line up: outputs and carried state. Skipped without a device.
#include "kernels/cuda/ops.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include "gpu_test_util.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/jet_ops.h"
#include "kernels/cpu/linear.h"
#include "kernels/cuda/linear.h"

namespace jetserve::gpu_test {
namespace {

namespace kc = kernels::cpu;
namespace kg = kernels::cuda;

class GpuOpsTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { SKIP_WITHOUT_CUDA(); }
  int rows() const { return GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(Batch, GpuOpsTest, ::testing::Values(1, 33, 512));

TEST_P(GpuOpsTest, RmsNormAndAddRmsNorm) {
  const int64_t R = rows(), D = 1537;
  auto x = RandomVector(R * D, 1), d = RandomVector(R * D, 2), w = RandomVector(D, 3, 0.5f, 1.5f);
  DeviceBuffer<float> gx(x), gd(d), gw(w), out(R * D);
  DeviceBuffer<uint16_t> out16(R * D);
  ASSERT_TRUE(kg::RmsNorm(gx.get(), gw.get(), R, D, 1e-6f, out.get(), out16.get(), 0).ok());
  std::vector<float> want(R * D);
  kc::RmsNorm(x.data(), w.data(), R, D, 1e-6f, want.data());
  ExpectClose(out.Download(), want, kF32Atol, kF32Rtol, "RmsNorm f32");
  ExpectClose(FromBf16(out16.Download()), want, kBf16Atol, kBf16Rtol, "RmsNorm bf16");

  ASSERT_TRUE(
      kg::AddRmsNorm(gx.get(), gd.get(), gw.get(), R, D, 1e-6f, out.get(), nullptr, 0).ok());
  std::vector<float> res = x;
  kc::AddRmsNorm(res.data(), d.data(), w.data(), R, D, 1e-6f, want.data());
  ExpectClose(gx.Download(), res, kF32Atol, kF32Rtol, "AddRmsNorm residual");
  ExpectClose(out.Download(), want, kF32Atol, kF32Rtol, "AddRmsNorm out");
}

TEST_P(GpuOpsTest, ElementwiseOps) {
  const int64_t R = rows();
  // SiluMul: a width that is not a multiple of 4 (scalar kernel) and one that is (4 a thread).
  for (const int64_t I : {int64_t{333}, int64_t{8960}}) {
    auto gu = RandomVector(R * 2 * I, 4, -4, 4);
    DeviceBuffer<float> ggu(gu), out(R * I);
    DeviceBuffer<uint16_t> out16(R * I);
    ASSERT_TRUE(kg::SiluMul(ggu.get(), R, I, out.get(), out16.get(), 0).ok());
    std::vector<float> gate(R * I), up(R * I), want(R * I);
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t i = 0; i < I; ++i) {
        gate[r * I + i] = gu[r * 2 * I + i];
        up[r * I + i] = gu[r * 2 * I + I + i];
      }
    }
    kc::SiluMul(gate.data(), up.data(), R, I, want.data());
    const std::string what = "SiluMul width " + std::to_string(I);
    ExpectClose(out.Download(), want, kF32Atol, kF32Rtol, what);
    ExpectClose(FromBf16(out16.Download()), want, kBf16Atol, kBf16Rtol, what + " bf16");
  }

  // AddBias: every row gets the same bias vector (an odd width).
  {
    const int64_t C = 1001;
    auto y = RandomVector(R * C, 14), bias = RandomVector(C, 15);
    DeviceBuffer<float> gy(y), gbias(bias);
    ASSERT_TRUE(kg::AddBias(gy.get(), gbias.get(), R, C, 0).ok());
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t c = 0; c < C; ++c) y[r * C + c] += bias[c];
    }
    ExpectClose(gy.Download(), y, 0, 0, "AddBias");
  }

  // Jet q/k preparation, gates and gated RMSNorm (2B's Dk 96 and Dv 256, odd head counts).
  const int64_t H = 3, Dk = 96, Dv = 256;
  auto q = RandomVector(R * H * Dk, 5, -3, 3);
  DeviceBuffer<float> gq(q);
  ASSERT_TRUE(kg::SiluL2NormHeads(gq.get(), R, H, Dk, 1e-6f, 0.1f, 0).ok());
  kc::SiluInPlace(q.data(), R * H * Dk);
  kc::L2NormHeads(q.data(), R, H, Dk, 1e-6f, 0.1f);
  ExpectClose(gq.Download(), q, kF32Atol, kF32Rtol, "SiluL2NormHeads");

  auto a = RandomVector(R * H, 6, -30, 30), b = RandomVector(R * H, 7, -5, 5);
  auto alog = RandomVector(H, 8), dtb = RandomVector(H, 9);
  DeviceBuffer<float> ga(a), gb(b), galog(alog), gdtb(dtb);
  ASSERT_TRUE(kg::JetGates(ga.get(), gb.get(), galog.get(), gdtb.get(), R, H, 0).ok());
  kc::JetGates(a.data(), b.data(), alog.data(), dtb.data(), R, H);
  ExpectClose(ga.Download(), a, kF32Atol, kF32Rtol, "JetGates g");
  ExpectClose(gb.Download(), b, kF32Atol, kF32Rtol, "JetGates beta");

  auto o = RandomVector(R * H * Dv, 10), gt = RandomVector(R * H * Dv, 11, -3, 3);
  auto nw = RandomVector(Dv, 12, 0.5f, 1.5f);
  DeviceBuffer<float> go(o), ggt(gt), gnw(nw), gout(R * H * Dv);
  DeviceBuffer<uint16_t> gout16(R * H * Dv);
  ASSERT_TRUE(
      kg::GatedRmsNorm(go.get(), ggt.get(), gnw.get(), R, H, Dv, 1e-5f, gout.get(), gout16.get(), 0)
          .ok());
  kc::GatedRmsNorm(o.data(), gt.data(), nw.data(), R, H, Dv, 1e-5f);
  ExpectClose(gout.Download(), o, kF32Atol, kF32Rtol, "GatedRmsNorm");
  ExpectClose(FromBf16(gout16.Download()), o, kBf16Atol, kBf16Rtol, "GatedRmsNorm bf16");
}

// The fused jet projection's output back in its parts (2B's widths; an empty part).
TEST_P(GpuOpsTest, SplitColumns) {
  const int64_t R = rows();
  const std::vector<int64_t> widths = {1152, 1152, 3072, 0, 12, 12, 384};
  const int64_t width = std::accumulate(widths.begin(), widths.end(), int64_t{0});
  auto src = RandomVector(R * width, 13);
  DeviceBuffer<float> gsrc(src);
  std::vector<std::unique_ptr<DeviceBuffer<float>>> outs;
  kg::ColumnSplitDev parts;
  for (int64_t w : widths) {
    outs.push_back(std::make_unique<DeviceBuffer<float>>(std::max<int64_t>(R * w, 1)));
    parts.widths[parts.count] = w;
    parts.dst[parts.count++] = outs.back()->get();
  }
  ASSERT_TRUE(kg::SplitColumns(gsrc.get(), R, width, parts, 0).ok());
  int64_t at = 0;
  for (size_t i = 0; i < widths.size(); ++i) {
    std::vector<float> want(R * widths[i]);
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t c = 0; c < widths[i]; ++c) want[r * widths[i] + c] = src[r * width + at + c];
    }
    if (!want.empty()) {
      ExpectClose(outs[i]->Download(), want, 0, 0, "SplitColumns part " + std::to_string(i));
    }
    at += widths[i];
  }
  parts.widths[0] += 1;  // the widths no longer sum to the width
  EXPECT_FALSE(kg::SplitColumns(gsrc.get(), R, width, parts, 0).ok());
}

// The incremental block tables' updates: pairs scattered into the rows, an index past the end
// dropped, everything else untouched.
TEST_P(GpuOpsTest, ScatterInt32) {
  const int64_t n = 3 * rows() + 5;
  std::vector<int32_t> dst(n, -7), pairs;
  for (int64_t i = 0; i < rows(); ++i) {
    const int32_t at = static_cast<int32_t>(n - 1 - 3 * i);  // distinct, in no order
    pairs.insert(pairs.end(), {at, static_cast<int32_t>(1000 + i)});
    dst[at] = static_cast<int32_t>(1000 + i);
  }
  pairs.insert(pairs.end(), {static_cast<int32_t>(n), 99});  // out of range: dropped
  DeviceBuffer<int32_t> gpairs(pairs), gdst(std::vector<int32_t>(n, -7));
  ASSERT_TRUE(
      kg::ScatterInt32(gpairs.get(), static_cast<int64_t>(pairs.size() / 2), gdst.get(), n, 0)
          .ok());
  EXPECT_EQ(gdst.Download(), dst);
  EXPECT_FALSE(kg::ScatterInt32(gpairs.get(), -1, gdst.get(), n, 0).ok());
}

// The fork's KV page copy: every plane's page src → page dst for each pair, nothing else
// touched; pages of 16-byte multiples (vector path) and of 7 elements (scalar path); with
// batch 512, 512 pairs x 130 planes > 65,535 rows of the grid (the y stride loop).
TEST_P(GpuOpsTest, CopyPages) {
  const int64_t count = rows();
  for (const int64_t page : {int64_t{7}, int64_t{64}}) {
    const int64_t planes = count == 512 ? 130 : 3, pages = 2 * count + 3;
    const int64_t stride = pages * page;
    std::vector<uint16_t> pool(planes * stride);
    std::iota(pool.begin(), pool.end(), uint16_t{1});
    std::vector<int32_t> pairs;
    std::vector<uint16_t> want = pool;
    for (int64_t i = 0; i < count; ++i) {
      // Sources among the first count + 1 pages, destinations among the rest, in no order.
      const int32_t src = static_cast<int32_t>((7 * i) % (count + 1));
      const int32_t dst = static_cast<int32_t>(pages - 1 - i);
      pairs.insert(pairs.end(), {src, dst});
      for (int64_t p = 0; p < planes; ++p) {
        std::copy_n(pool.begin() + p * stride + src * page, page,
                    want.begin() + p * stride + dst * page);
      }
    }
    DeviceBuffer<uint16_t> gpool(pool);
    DeviceBuffer<int32_t> gpairs(pairs);
    ASSERT_TRUE(kg::CopyPages(gpool.get(), planes, stride, page, gpairs.get(), count, 0).ok());
    EXPECT_EQ(gpool.Download(), want) << "page " << page;
  }
  EXPECT_FALSE(kg::CopyPages(nullptr, 2, 4, 8, nullptr, 1, 0).ok());  // page past the plane
}

TEST_P(GpuOpsTest, RopeAndEmbedding) {
  const int64_t T = rows(), H = 3, hd = 98;
  auto x = RandomVector(T * H * hd, 13);
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>((t * 977) % 65536);
  DeviceBuffer<float> gx(x);
  DeviceBuffer<int32_t> gpos(pos);
  ASSERT_TRUE(kg::Rope(gx.get(), gpos.get(), T, H, hd, 1e6, 0).ok());
  kc::Rope(x.data(), pos.data(), T, H, hd, 1e6);
  ExpectClose(gx.Download(), x, 1e-3f, 1e-3f, "Rope");

  const int64_t V = 1001, D = 77;
  auto table = ToBf16(RandomVector(V * D, 14));
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 31 + 7) % V);
  DeviceBuffer<uint16_t> gtable(table);
  DeviceBuffer<int32_t> gids(ids);
  DeviceBuffer<float> out(T * D);
  ASSERT_TRUE(kg::EmbeddingGather(gtable.get(), V, D, gids.get(), T, out.get(), 0).ok());
  std::vector<float> want(T * D);
  kc::EmbeddingGather({kernels::DType::kBF16, table.data(), V, D}, ids.data(), T, want.data());
  ExpectClose(out.Download(), want, 0, 0, "EmbeddingGather");
}

TEST_P(GpuOpsTest, LinearMatchesCpuOnBf16Inputs) {
  auto linear = kg::CublasLtLinear::Create();
  ASSERT_TRUE(linear.ok()) << linear.status();
  const int64_t T = rows();
  // cuBLASLt shapes of the 2B model (and a tall-skinny one), then the fallback's (rows % 4 or
  // cols % 8 not 0).
  for (auto [O, K] : {std::pair<int64_t, int64_t>{1536, 1536},
                      {256, 8960},
                      {12, 1536},
                      {8, 8},
                      {257, 1536},
                      {333, 1000},
                      {97, 36}}) {
    auto x = RoundBf16(RandomVector(T * K, 15 + O));
    auto w = ToBf16(RandomVector(O * K, 16 + O, -0.1f, 0.1f));
    DeviceBuffer<uint16_t> gx(ToBf16(x)), gw(w);
    DeviceBuffer<float> gy(T * O);
    ASSERT_TRUE((*linear)->Linear(gx.get(), T, gw.get(), O, K, gy.get(), 0).ok());
    std::vector<float> want(T * O);
    kc::Linear(x.data(), T, {kernels::DType::kBF16, w.data(), O, K}, nullptr, want.data());
    ExpectClose(gy.Download(), want, 1e-3f, 1e-3f, "Linear " + std::to_string(O));
  }
}

// With tuning on, a shape's first call times cuBLASLt's candidates on its operands and keeps the
// fastest: the result is the product all the same (first call and later ones), a shape planned
// before tuning was switched on is tuned at its next call, and the fallback's shapes are not.
TEST_P(GpuOpsTest, TunedLinearMatchesCpu) {
  auto linear = kg::CublasLtLinear::Create();
  ASSERT_TRUE(linear.ok()) << linear.status();
  const int64_t T = rows();
  ASSERT_TRUE((*linear)->Prepare(T, 1536, 3072).ok());  // planned untuned
  (*linear)->set_tuning(true);
  int64_t cublas_shapes = 0;
  for (auto [O, K] :
       {std::pair<int64_t, int64_t>{1536, 3072}, {8856, 1536}, {12, 1536}, {97, 36}}) {
    auto x = RoundBf16(RandomVector(T * K, 25 + O));
    auto w = ToBf16(RandomVector(O * K, 26 + O, -0.1f, 0.1f));
    DeviceBuffer<uint16_t> gx(ToBf16(x)), gw(w);
    std::vector<float> want(T * O);
    kc::Linear(x.data(), T, {kernels::DType::kBF16, w.data(), O, K}, nullptr, want.data());
    for (int call = 0; call < 2; ++call) {
      DeviceBuffer<float> gy(T * O);
      ASSERT_TRUE((*linear)->Linear(gx.get(), T, gw.get(), O, K, gy.get(), 0).ok());
      ExpectClose(gy.Download(), want, 1e-3f, 1e-3f,
                  "tuned Linear " + std::to_string(O) + " call " + std::to_string(call));
    }
    if (O % 4 == 0 && K % 8 == 0) ++cublas_shapes;
  }
  EXPECT_EQ((*linear)->tuned_shapes(), cublas_shapes);
}

// Sequences of the given lengths over a flat batch: offsets and the row -> sequence map.
struct Batch {
  std::vector<int64_t> lengths, offsets;
  std::vector<int32_t> token_seq;
  int64_t tokens = 0, max_tokens = 0;
  explicit Batch(std::vector<int64_t> l) : lengths(std::move(l)) {
    for (size_t i = 0; i < lengths.size(); ++i) {
      offsets.push_back(tokens);
      for (int64_t t = 0; t < lengths[i]; ++t) token_seq.push_back(static_cast<int32_t>(i));
      tokens += lengths[i];
      max_tokens = std::max(max_tokens, lengths[i]);
    }
  }
};

std::vector<int64_t> Lengths(int n, int64_t prefill_max) {
  std::vector<int64_t> l;
  for (int i = 0; i < n; ++i) l.push_back(prefill_max <= 1 ? 1 : 1 + (i * 37 + 11) % prefill_max);
  return l;
}

void CheckJet(const kc::JetShape& shape, const Batch& batch, uint64_t seed) {
  const int64_t S = batch.lengths.size(), T = batch.tokens;
  const int64_t C = shape.channels(), W = shape.conv_size;
  const int64_t Hd = shape.heads, Dk = shape.key_dim, Dv = shape.value_dim;
  const int64_t state_n = Hd * Dk * Dv, tail_n = (W - 1) * C;
  auto state = RandomVector(S * state_n, seed, -0.5f, 0.5f);
  auto tail = RandomVector(S * tail_n, seed + 1);
  auto u = RandomVector(T * C, seed + 2), kern = RandomVector(T * C * W, seed + 3);
  auto q = RandomVector(T * Hd * Dk, seed + 4, -0.2f, 0.2f);
  auto k = RandomVector(T * Hd * Dk, seed + 5, -0.2f, 0.2f);
  auto v = RandomVector(T * Hd * Dv, seed + 6);
  auto g = RandomVector(T * Hd, seed + 7, -1.0f, 0.0f), beta = RandomVector(T * Hd, seed + 8, 0, 1);
  DeviceBuffer<float> gstate(state), gtail(tail), gu(u), gkern(kern), gq(q), gk(k), gv(v), gg(g),
      gbeta(beta), gconv(T * C), gout(T * Hd * Dv);
  std::vector<kc::JetSeq> cpu(S);
  std::vector<kg::JetSeqDev> dev(S);
  for (int64_t i = 0; i < S; ++i) {
    cpu[i] = {batch.offsets[i], batch.lengths[i], state.data() + i * state_n,
              tail.data() + i * tail_n};
    dev[i] = {static_cast<int32_t>(batch.offsets[i]), static_cast<int32_t>(batch.lengths[i]),
              gstate.get() + i * state_n, gtail.get() + i * tail_n};
  }
  DeviceBuffer<kg::JetSeqDev> gseqs(S);
  ASSERT_EQ(cudaMemcpy(gseqs.get(), dev.data(), S * sizeof(kg::JetSeqDev), cudaMemcpyHostToDevice),
            cudaSuccess);
  DeviceBuffer<int32_t> gtok(batch.token_seq);
  const kg::JetShapeDev dshape{Hd, Dk, Dv, W};
  ASSERT_TRUE(kg::DynamicCausalConv(gu.get(), gkern.get(), gseqs.get(), S, gtok.get(), T, dshape,
                                    gconv.get(), 0)
                  .ok());
  std::vector<float> conv(T * C);
  kc::DynamicCausalConv(u.data(), kern.data(), cpu.data(), S, shape, conv.data());
  ExpectClose(gconv.Download(), conv, kF32Atol, kF32Rtol, "DynamicCausalConv out");
  ExpectClose(gtail.Download(), tail, 0, 0, "DynamicCausalConv tail");

  ASSERT_TRUE(kg::GatedDeltaRuleRecurrent(gq.get(), gk.get(), gv.get(), gg.get(), gbeta.get(),
                                          gseqs.get(), S, dshape, gout.get(), 0)
                  .ok());
  std::vector<float> out(T * Hd * Dv);
  std::vector<float> state0 = state;  // for the chunked form below
  kc::GatedDeltaRule(q.data(), k.data(), v.data(), g.data(), beta.data(), cpu.data(), S, shape,
                     out.data());
  ExpectClose(gout.Download(), out, 1e-3f, 1e-3f, "GatedDeltaRuleRecurrent out");
  ExpectClose(gstate.Download(), state, 1e-4f, 1e-4f, "GatedDeltaRuleRecurrent state");

  // The same on the warp kernel (GdrRecurrentForm::kWarps; the block kernel again past Dk 128).
  gstate.Upload(state0);
  kg::SetGdrRecurrentForm(kg::GdrRecurrentForm::kWarps);
  const absl::Status warps = kg::GatedDeltaRuleRecurrent(
      gq.get(), gk.get(), gv.get(), gg.get(), gbeta.get(), gseqs.get(), S, dshape, gout.get(), 0);
  kg::SetGdrRecurrentForm(std::nullopt);  // the environment's choice again
  ASSERT_TRUE(warps.ok()) << warps;
  ExpectClose(gout.Download(), out, 1e-3f, 1e-3f, "GatedDeltaRuleRecurrent (warps) out");
  ExpectClose(gstate.Download(), state, 1e-4f, 1e-4f, "GatedDeltaRuleRecurrent (warps) state");

  gstate.Upload(state0);
  const absl::Status chunked =
      kg::GatedDeltaRuleChunked(gq.get(), gk.get(), gv.get(), gg.get(), gbeta.get(), gseqs.get(), S,
                                batch.max_tokens, dshape, gout.get(), 0);
  if (absl::IsUnimplemented(chunked)) {
    std::cout << "[ NOTE ] GatedDeltaRuleChunked not implemented: " << chunked.message() << "\n";
    return;
  }
  ASSERT_TRUE(chunked.ok()) << chunked;
  ExpectClose(gout.Download(), out, kBf16Atol, kBf16Rtol, "GatedDeltaRuleChunked out");
  ExpectClose(gstate.Download(), state, 1e-3f, 1e-3f, "GatedDeltaRuleChunked state");

  // The two-kernel WY form, fp32 and with tf32 tensor-core products, each from the same initial
  // state; the output poisoned first, so that a row it does not write shows.
  DeviceBuffer<float> gws(kg::GatedDeltaRuleWyWorkspaceFloats(T, dshape));
  for (const bool tensor_cores : {false, true}) {
    const std::string what = tensor_cores ? "GatedDeltaRuleWy (tensor cores)" : "GatedDeltaRuleWy";
    gstate.Upload(state0);
    gout.Upload(std::vector<float>(T * Hd * Dv, std::nanf("")));
    const absl::Status wy =
        kg::GatedDeltaRuleWy(gq.get(), gk.get(), gv.get(), gg.get(), gbeta.get(), gseqs.get(), S, T,
                             batch.max_tokens, dshape, gws.get(), gout.get(), 0, tensor_cores);
    ASSERT_TRUE(wy.ok()) << what << ": " << wy;
    ExpectClose(gout.Download(), out, kBf16Atol, kBf16Rtol, what + " out");
    ExpectClose(gstate.Download(), state, 1e-3f, 1e-3f, what + " state");
  }
}

TEST_P(GpuOpsTest, JetDecodeStep) {
  CheckJet({12, 96, 256, 4}, Batch(Lengths(rows(), 1)), 100);
  CheckJet({3, 33, 50, 4}, Batch(Lengths(rows(), 1)), 200);
  // Dk 8: the warp kernel's 16 rows a half; Dv 20: two of its four warps have no columns.
  CheckJet({2, 8, 20, 4}, Batch(Lengths(rows(), 1)), 250);
}

TEST_P(GpuOpsTest, JetPrefillChunks) {
  if (rows() > 33) GTEST_SKIP() << "prefill checked at batch 1 and 33";
  CheckJet({12, 96, 256, 4}, Batch(Lengths(rows(), 130)), 300);  // 2B head sizes
  CheckJet({4, 128, 256, 4}, Batch(Lengths(rows(), 70)), 400);   // 4B head sizes
  CheckJet({3, 33, 50, 3}, Batch({1, 2, 67}), 500);              // odd; chunks < and > W
}

// Runs the same steps (a prefill chunk, then decode steps) through the CPU and CUDA attention
// and compares each step's output. K/V inputs are bf16-rounded so both caches hold equal values.
// head_dim 64 takes the kernel's 16-byte load path, 18 its scalar one; the decode steps of
// (q_heads / kv_heads, head_dim) in (6, 128), (8, 128), (3, 64), (1, 64) take the decode kernel
// when it is on, others the generic one.
// Decode steps' tolerance (prefill steps always get 1e-4 / 1e-3: the generic kernel's fp32).
struct AttnTolerance {
  float atol = 1e-4f, rtol = 1e-3f;
};
void CheckAttention(bool window, int num_seqs, int64_t prefill_max, int decode_steps, uint64_t seed,
                    int64_t head_dim = 64, int64_t q_heads = 6, int64_t kv_heads = 2,
                    int64_t window_size = 37, AttnTolerance decode_tol = {}) {
  const kc::AttentionShape shape{q_heads, kv_heads, head_dim};
  const kg::AttnShapeDev dshape{q_heads, kv_heads, head_dim};
  const int64_t P = 16, Wn = window_size;
  const int64_t row = shape.kv_heads * shape.head_dim;
  const int64_t max_len = prefill_max + decode_steps;
  const int64_t pages_per_seq = (max_len + P - 1) / P;
  const int64_t num_pages = num_seqs * pages_per_seq + 3;
  // Block tables: a permutation of the pages so neighbouring positions are not adjacent.
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
  std::vector<float> cpu_k_pages(num_pages * P * row), cpu_v_pages(num_pages * P * row);
  DeviceBuffer<uint16_t> gk_pages(num_pages * P * row), gv_pages(num_pages * P * row);
  DeviceBuffer<int32_t> gtables(perm);
  std::vector<float> cpu_rings(num_seqs * 2 * Wn * row);
  DeviceBuffer<uint16_t> grings(num_seqs * 2 * Wn * row);
  std::vector<int64_t> done(num_seqs, 0);
  // The first sequence prefills the whole prefill_max, so that the longest context (split-K
  // over many keys, a wrapped window ring) is covered at every batch size.
  auto lengths0 = Lengths(num_seqs, prefill_max);
  lengths0[0] = prefill_max;
  for (int step = 0; step <= decode_steps; ++step) {
    Batch batch(step == 0 ? lengths0 : std::vector<int64_t>(num_seqs, 1));
    const int64_t T = batch.tokens;
    auto q = RandomVector(T * shape.q_heads * shape.head_dim, seed + 10 * step + 1);
    auto k = RoundBf16(RandomVector(T * row, seed + 10 * step + 2));
    auto v = RoundBf16(RandomVector(T * row, seed + 10 * step + 3));
    std::vector<kc::AttentionSeq> cpu(num_seqs);
    std::vector<kg::AttnSeqDev> dev(num_seqs);
    std::vector<int32_t> positions;
    for (int i = 0; i < num_seqs; ++i) {
      cpu[i].token_offset = batch.offsets[i];
      cpu[i].num_tokens = batch.lengths[i];
      cpu[i].start_position = done[i];
      cpu[i].block_table = perm.data() + i * pages_per_seq;
      cpu[i].k_ring = cpu_rings.data() + (2 * i) * Wn * row;
      cpu[i].v_ring = cpu_rings.data() + (2 * i + 1) * Wn * row;
      dev[i].token_offset = static_cast<int32_t>(batch.offsets[i]);
      dev[i].num_tokens = static_cast<int32_t>(batch.lengths[i]);
      dev[i].start_position = static_cast<int32_t>(done[i]);
      dev[i].block_table = gtables.get() + i * pages_per_seq;
      dev[i].k_ring = grings.get() + (2 * i) * Wn * row;
      dev[i].v_ring = grings.get() + (2 * i + 1) * Wn * row;
      for (int64_t t = 0; t < batch.lengths[i]; ++t) positions.push_back(done[i] + t);
    }
    DeviceBuffer<kg::AttnSeqDev> gseqs(num_seqs);
    ASSERT_EQ(cudaMemcpy(gseqs.get(), dev.data(), num_seqs * sizeof(kg::AttnSeqDev),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    DeviceBuffer<float> gq(q), gk(k), gv(v), gout(T * shape.q_heads * shape.head_dim);
    DeviceBuffer<int32_t> gtok(batch.token_seq), gpos(positions);
    int64_t max_ctx = 0;
    for (int i = 0; i < num_seqs; ++i) max_ctx = std::max(max_ctx, done[i] + batch.lengths[i]);
    // The CPU's paged result, once per step (a long prefill costs seconds on the CPU).
    std::vector<float> want(T * shape.q_heads * shape.head_dim);
    if (!window) {
      kc::PagedAttention(q.data(), k.data(), v.data(), cpu.data(), num_seqs, shape, P,
                         cpu_k_pages.data(), cpu_v_pages.data(), want.data());
    }
    for (int64_t splits :
         {int64_t{1}, kg::ChooseAttentionSplits(num_seqs, batch.max_tokens, max_ctx, dshape, 132),
          int64_t{7}}) {
      DeviceBuffer<float> ws(kg::AttentionWorkspaceFloats(T, dshape, splits));
      if (!window) {
        ASSERT_TRUE(kg::PagedKvWrite(gk.get(), gv.get(), gseqs.get(), gtok.get(), gpos.get(), T,
                                     dshape, P, gk_pages.get(), gv_pages.get(), 0)
                        .ok());
        ASSERT_TRUE(kg::PagedAttention(gq.get(), gseqs.get(), num_seqs, T, batch.max_tokens,
                                       max_ctx, dshape, P, gk_pages.get(), gv_pages.get(), splits,
                                       ws.get(), gout.get(), nullptr, 0)
                        .ok());
        ExpectClose(
            gout.Download(), want, step == 0 ? 1e-4f : decode_tol.atol,
            step == 0 ? 1e-3f : decode_tol.rtol,
            "PagedAttention step " + std::to_string(step) + " splits " + std::to_string(splits));
      } else {
        // The window op writes the ring after attending, so it runs once per step (with 7
        // splits, the last of the loop) and is compared against the CPU's.
        if (splits != 7) continue;
        ASSERT_TRUE(kg::WindowAttention(gq.get(), gk.get(), gv.get(), gseqs.get(), num_seqs, T,
                                        batch.max_tokens, max_ctx, dshape, Wn, splits, ws.get(),
                                        gout.get(), nullptr, 0)
                        .ok());
        kc::WindowAttention(q.data(), k.data(), v.data(), cpu.data(), num_seqs, shape, Wn,
                            want.data());
        ExpectClose(gout.Download(), want, step == 0 ? 1e-4f : decode_tol.atol,
                    step == 0 ? 1e-3f : decode_tol.rtol,
                    "WindowAttention step " + std::to_string(step));
      }
    }
    for (int i = 0; i < num_seqs; ++i) done[i] += batch.lengths[i];
  }
}

TEST_P(GpuOpsTest, PagedAttentionPrefillThenDecode) {
  CheckAttention(false, rows(), rows() > 33 ? 40 : 150, 3, 600);
}

TEST_P(GpuOpsTest, WindowAttentionPrefillThenDecode) {
  CheckAttention(true, rows(), rows() > 33 ? 40 : 150, 3, 700);
}

TEST_P(GpuOpsTest, AttentionScalarLoadPath) {
  if (rows() > 33) GTEST_SKIP() << "checked at batch 1 and 33";
  CheckAttention(false, rows(), 70, 2, 900, 18);
  CheckAttention(true, rows(), 70, 2, 901, 18);
}

TEST(GpuOpsLongContext, SplitKDecodeAt8K) {
  SKIP_WITHOUT_CUDA();
  CheckAttention(false, 1, 8191, 2, 800);
}

// The decode kernels on the real models' shapes: 2B (12 q heads on 2 kv heads, head_dim 128:
// 8 lanes per key on CUDA cores) and 4B (16 on 2: 16 lanes per key), contexts up to 3000 keys
// (several splits, the last one partial; with 1 split the generic kernel) and their sliding
// windows (1152 and 2048 keys, wrapped: the first sequence prefills the whole context). The
// decode kernels read the step's own window key as bf16 (what the ring holds from the next step
// on, and what the paged path reads from its pages); the inputs here are bf16-rounded, so the
// CUDA-core kernel matches the CPU's fp32 exactly there. The tensor-core kernel rounds q·scale
// and the probabilities to bf16 (relative error ≤ 2⁻⁹ each): an output moves by at most
// 2⁻⁹ · max|v - out| ≤ 3.9e-3 from the probabilities (v uniform in ±1) plus ~1e-3 from q, so it
// gets atol 5e-3, rtol 1e-2 (decode_attention_emulation.py measures ≤ half of that on these
// shapes); a missing or doubled 16-key tile of a 150-key context moves outputs by ~1.5e-2.
void CheckDecodeKernels(int rows, kg::DecodeAttention kernel, float atol, float rtol) {
  kg::SetDecodeAttentionKernel(kernel);
  struct Restore {
    ~Restore() { kg::SetDecodeAttentionKernel(std::nullopt); }  // the environment's choice again
  } restore;
  const AttnTolerance tol{atol, rtol};
  CheckAttention(false, rows, 150, 3, 999, 64, 6, 2, 37, tol);  // group 3, head_dim 64
  CheckAttention(true, rows, 150, 3, 998, 64, 6, 2, 37, tol);
  const int64_t context = rows == 1 ? 3000 : 1100;  // the CPU reference's prefill is slow
  CheckAttention(false, rows, context, 3, 1000, 128, 12, 2, 37, tol);
  CheckAttention(true, rows, context, 3, 1001, 128, 12, 2, 1152, tol);
  CheckAttention(false, rows, context, 2, 1002, 128, 16, 2, 37, tol);
  CheckAttention(true, rows, context, 2, 1003, 128, 16, 2, 2048, tol);
  CheckAttention(false, rows, 500, 2, 1004, 64, 8, 8, 37, tol);  // group 1
}

TEST_P(GpuOpsTest, DecodeKernelOn2BAnd4BShapes) {
  if (rows() > 33) GTEST_SKIP() << "checked at batch 1 and 33";
  CheckDecodeKernels(rows(), kg::DecodeAttention::kCudaCores, 1e-4f, 1e-3f);
}

TEST_P(GpuOpsTest, DecodeTensorCoreKernelOn2BAnd4BShapes) {
  if (rows() > 33) GTEST_SKIP() << "checked at batch 1 and 33";
  CheckDecodeKernels(rows(), kg::DecodeAttention::kTensorCores, 5e-3f, 1e-2f);
}

}  // namespace
}  // namespace jetserve::gpu_test
