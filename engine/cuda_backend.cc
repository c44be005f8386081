// The CUDA forward pass. Per step: one host-to-device copy of the step's metadata (token ids,
// positions, row -> sequence map, block tables and per-layer sequence descriptors), then every
// layer's kernels on one stream, then one device-to-host copy (logits or sampled ids).
#include "engine/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/cuda_graphs.h"
#include "engine/cuda_pools.h"
#include "engine/cuda_profiler.h"
#include "engine/cuda_sample_arena.h"
#include "engine/cuda_step_meta.h"
#include "engine/cuda_weights.h"
#include "engine/status_macros.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sampling.h"
#include "kernels/dtype.h"

namespace jetserve {

namespace kg = kernels::cuda;
using kg::bf16_t;

namespace {

// A device buffer that only grows (cudaFree/cudaMalloc outside any capture).
struct Grow {
  void* p = nullptr;
  size_t bytes = 0;
  absl::Status Ensure(size_t need) {
    if (need <= bytes) return absl::OkStatus();
    if (p != nullptr) CUDA_RETURN_IF_ERROR(cudaFree(p));
    p = nullptr;
    bytes = 0;
    const size_t want = std::max<size_t>(need, 256);
    CUDA_RETURN_IF_ERROR(cudaMalloc(&p, want));
    bytes = want;
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

}  // namespace

struct CudaBackend::Impl {
  const Model* model = nullptr;
  ModelConfig config;
  kg::DeviceInfo device;
  cudaStream_t stream = nullptr;
  std::unique_ptr<kg::CublasLtLinear> linear;

  CudaWeights weights;

  // Device pools mirroring HybridMemory's (same indices), allocated by AttachMemory.
  HybridMemory* memory = nullptr;
  CudaPools pools;
  // JETSERVE_CUDA_TABLES=incremental: block tables kept on the device, a row per state slot
  // (cuda_step_meta.h); each step uploads and scatters only the entries added since. Off until
  // it has run on a GPU (see tests/gpu/README.md).
  bool incremental_tables = false;
  absl::Status pending;  // an observer callback's failure, reported by the next Forward
  static constexpr int64_t kChunkedFrom = 8;  // tokens of the longest sequence in the step
  // The delta rule's form for steps with a sequence of kChunkedFrom tokens or more (shorter
  // steps always take the recurrent form), from JETSERVE_CUDA_GDR: "recurrent" (exact,
  // sequential over tokens, to rule the chunked forms out), "wy" (the two-kernel WY form,
  // GatedDeltaRuleWy), "wy_tc" (its products on tensor cores); else the one-kernel chunked form.
  // wy and wy_tc are off until they have run on a GPU (see tests/gpu/README.md).
  enum class GdrForm { kRecurrent, kChunked, kWy, kWyTensorCores };
  GdrForm gdr_prefill = GdrForm::kChunked;
  GdrForm GdrFormOf(const StepMeta& m) const {
    return m.max_tokens >= kChunkedFrom ? gdr_prefill : GdrForm::kRecurrent;
  }
  kg::JetShapeDev JetShape() const {
    const JetConfig& j = config.jet;
    return {j.num_heads, j.head_dim, j.value_head_dim, j.conv_size};
  }
  // JETSERVE_CUDA_IN_PROJ=fused: the jet layers' seven input projections as one GEMM
  // (DeviceLayer::in_proj). Off until it has run on a GPU (see tests/gpu/README.md).
  bool fused_in_proj = false;
  // JETSERVE_CUDA_GEMM_TUNE=1: decode steps' GEMM shapes are tuned at their first uncaptured
  // step (CublasLtLinear::set_tuning: the fastest of cuBLASLt's candidates, timed). Off until
  // it has run on a GPU.
  bool gemm_tuning = false;

  // Step workspace.
  enum Buf {
    kX,
    kDelta,
    kQ,
    kK,
    kV,
    kGate,
    kA,
    kB,
    kGen,
    kKern,
    kConv,
    kO,
    kGU,
    kSel,
    kLogits,
    kSampleScratch,
    kAttnWs,
    kHn16,
    kAct16,
    kMeta,
    kResults,
    kSampleArena,
    kInProj,
    kGdrWs,
    kNumBufs
  };
  Grow bufs[kNumBufs];
  cudaEvent_t meta_copied = nullptr;  // recorded after each step's metadata upload
  void* staging = nullptr;            // pinned host memory for the metadata and results
  size_t staging_bytes = 0;
  void* sample_staging = nullptr;  // pinned: SampleLast's upload, then its results
  size_t sample_staging_bytes = 0;
  int64_t kept_rows = 0;        // logits rows of the last ForwardKeepLogits
  bool device_sampling = true;  // JETSERVE_CUDA_SAMPLING=0: the engine samples on the CPU

  CudaStepProfiler profiler;  // bench --profile
  absl::Status Mark(const char* label) { return profiler.Mark(label, stream); }

  absl::Status EnsureSampleStaging(size_t bytes) {
    if (bytes <= sample_staging_bytes) return absl::OkStatus();
    if (sample_staging != nullptr) CUDA_RETURN_IF_ERROR(cudaFreeHost(sample_staging));
    sample_staging = nullptr;
    sample_staging_bytes = 0;
    const size_t want = std::max<size_t>(2 * bytes, 1 << 16);
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&sample_staging, want));
    sample_staging_bytes = want;
    return absl::OkStatus();
  }

  ~Impl() {
    // Nothing below (the weights included, freed after this body) may go while work is queued.
    if (stream != nullptr) cudaStreamSynchronize(stream);
    decode_graphs.Clear();
    if (ids_host != nullptr) cudaFreeHost(ids_host);
    for (Grow& g : bufs) {
      if (g.p != nullptr) cudaFree(g.p);
    }
    if (staging != nullptr) cudaFreeHost(staging);
    if (meta_copied != nullptr) cudaEventDestroy(meta_copied);
    if (sample_staging != nullptr) cudaFreeHost(sample_staging);
    linear.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // Grows by doubling, as the device buffer does: the block tables grow a page at a time in
  // serving, and re-pinning the whole buffer (cudaFreeHost synchronises the device) at every
  // new maximum would cost milliseconds in most steps at long context.
  absl::Status EnsureStaging(size_t bytes) {
    if (bytes <= staging_bytes) return absl::OkStatus();
    if (staging != nullptr) CUDA_RETURN_IF_ERROR(cudaFreeHost(staging));
    staging = nullptr;
    staging_bytes = 0;
    const size_t want = std::max<size_t>(2 * bytes, 1 << 16);
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&staging, want));
    staging_bytes = want;
    return absl::OkStatus();
  }

  float* F(Buf b) const { return bufs[b].as<float>(); }
  bf16_t* H16(Buf b) const { return bufs[b].as<bf16_t>(); }

  absl::Status Linear(const bf16_t* x, int64_t tokens, const DeviceMatrix& m, float* y) {
    return linear->Linear(x, tokens, m.w, m.rows, m.cols, y, stream);
  }

  using Meta = StepMeta;

  // Builds the step's metadata (cuda_step_meta.h) in pinned memory and copies it to the device
  // (one copy). With pad_to > the batch's sequences, adds one-token padding sequences on the
  // spare slot, ring and KV page (a decode batch padded to its CUDA-graph bucket).
  absl::StatusOr<Meta> BuildMeta(const ForwardBatch& batch, int64_t pad_to) {
    // With profiling on, the host's time here (waiting for the previous upload, filling the
    // buffer: at 64K context most of it is copying block tables) counts as "host.metadata":
    // the device is idle meanwhile when the step depends on the previous step's sampled ids.
    const auto started = std::chrono::steady_clock::now();
    BlockTableMirror* mirror = pools.tables() != nullptr ? &pools.table_mirror() : nullptr;
    ASSIGN_OR_RETURN(const StepMetaLayout layout,
                     PlanStepMeta(batch, pad_to, pools.slot_shape().jet_layers,
                                  pools.ring_shape().swa_layers, mirror, pools.table_stride()));
    // Headroom: the block tables grow with the contexts, and each reallocation of this buffer
    // invalidates the captured graphs.
    const size_t bytes = layout.bytes;
    RETURN_IF_ERROR(EnsureBuffer(kMeta, bytes > bufs[kMeta].bytes ? 2 * bytes : bytes));
    // The previous step's upload must have left staging before it is rewritten (a step that
    // samples nothing returns without synchronising).
    if (meta_copied != nullptr) CUDA_RETURN_IF_ERROR(cudaEventSynchronize(meta_copied));
    RETURN_IF_ERROR(EnsureStaging(bytes));
    char* device_meta = bufs[kMeta].as<char>();
    const Meta m =
        FillStepMeta(batch, layout, pools.view(), static_cast<char*>(staging), device_meta, mirror);
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(device_meta, staging, bytes, cudaMemcpyHostToDevice, stream));
    if (meta_copied == nullptr) {
      CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&meta_copied, cudaEventDisableTiming));
    }
    CUDA_RETURN_IF_ERROR(cudaEventRecord(meta_copied, stream));
    profiler.AddHostMs("host.metadata", std::chrono::duration<double, std::milli>(
                                            std::chrono::steady_clock::now() - started)
                                            .count());
    return m;
  }

  // Grows buffer b; a reallocation invalidates every captured graph (they hold its address).
  absl::Status EnsureBuffer(Buf b, size_t bytes) {
    const void* before = bufs[b].p;
    RETURN_IF_ERROR(bufs[b].Ensure(bytes));
    if (bufs[b].p != before) decode_graphs.Invalidate();
    return absl::OkStatus();
  }

  absl::Status EnsureWorkspace(const Meta& m, int64_t attn_splits) {
    const ModelConfig& c = config;
    const JetConfig& j = c.jet;
    const int64_t T = m.tokens, H = c.hidden_size, I = c.intermediate_size;
    const int64_t qw = static_cast<int64_t>(c.num_attention_heads) * c.head_dim;
    const int64_t kvw = static_cast<int64_t>(c.num_key_value_heads) * c.head_dim;
    const int64_t vd = j.value_dim(), kd = j.key_dim();
    auto f = [&](Buf b, int64_t n) { return EnsureBuffer(b, std::max<int64_t>(n, 1) * 4); };
    RETURN_IF_ERROR(f(kX, T * H));
    RETURN_IF_ERROR(f(kDelta, T * H));
    RETURN_IF_ERROR(f(kQ, T * std::max(qw, kd)));
    RETURN_IF_ERROR(f(kK, T * std::max(kvw, kd)));
    RETURN_IF_ERROR(f(kV, T * std::max(kvw, vd)));
    RETURN_IF_ERROR(f(kGate, T * vd));
    RETURN_IF_ERROR(f(kA, T * j.num_heads));
    RETURN_IF_ERROR(f(kB, T * j.num_heads));
    RETURN_IF_ERROR(f(kGen, T * (j.dconv_generator_reduction > 0 ? j.generator_dim() : 1)));
    RETURN_IF_ERROR(f(kKern, T * vd * std::max(j.conv_size, 1)));
    RETURN_IF_ERROR(f(kConv, T * vd));
    RETURN_IF_ERROR(f(kO, T * std::max(vd, qw)));
    RETURN_IF_ERROR(f(kGU, T * 2 * I));
    int64_t in_proj_rows = 0;
    for (const DeviceLayer& L : weights.layers)
      in_proj_rows = std::max(in_proj_rows, L.in_proj.rows);
    RETURN_IF_ERROR(f(kInProj, T * in_proj_rows));
    const GdrForm gdr = GdrFormOf(m);
    if (gdr == GdrForm::kWy || gdr == GdrForm::kWyTensorCores) {
      RETURN_IF_ERROR(f(kGdrWs, kg::GatedDeltaRuleWyWorkspaceFloats(T, JetShape())));
    }
    RETURN_IF_ERROR(f(kSel, m.rows * H));
    RETURN_IF_ERROR(f(kLogits, m.rows * c.vocab_size));
    const kg::AttnShapeDev shape{c.num_attention_heads, c.num_key_value_heads, c.head_dim};
    RETURN_IF_ERROR(f(kAttnWs, kg::AttentionWorkspaceFloats(T, shape, attn_splits)));
    const int64_t widest = std::max(
        {H, I, vd, qw, kd, int64_t{j.dconv_generator_reduction > 0 ? j.generator_dim() : 1}});
    RETURN_IF_ERROR(EnsureBuffer(kHn16, std::max<int64_t>(T * widest, 1) * 2));
    RETURN_IF_ERROR(EnsureBuffer(kAct16, std::max<int64_t>(T * widest, 1) * 2));
    RETURN_IF_ERROR(EnsureBuffer(kSampleScratch, std::max<int64_t>(m.rows, 1) * c.vocab_size * 4));
    RETURN_IF_ERROR(
        EnsureBuffer(kResults, std::max<int64_t>(m.rows, 1) * sizeof(kg::SampleResultDev)));
    return absl::OkStatus();
  }

  absl::Status AttentionMixer(const DeviceLayer& L, int64_t layer, const Meta& m, int64_t splits) {
    const ModelConfig& c = config;
    const int64_t T = m.tokens;
    const kg::AttnShapeDev shape{c.num_attention_heads, c.num_key_value_heads, c.head_dim};
    float *q = F(kQ), *k = F(kK), *v = F(kV);
    const bf16_t* hn = H16(kHn16);
    RETURN_IF_ERROR(Mark("attn.qkv"));
    RETURN_IF_ERROR(Linear(hn, T, L.q, q));
    RETURN_IF_ERROR(Linear(hn, T, L.k, k));
    RETURN_IF_ERROR(Linear(hn, T, L.v, v));
    RETURN_IF_ERROR(Mark("attn.rope"));
    RETURN_IF_ERROR(kg::AddBias(q, L.q_bias, T, L.q.rows, stream));
    RETURN_IF_ERROR(kg::AddBias(k, L.k_bias, T, L.k.rows, stream));
    RETURN_IF_ERROR(kg::AddBias(v, L.v_bias, T, L.v.rows, stream));
    RETURN_IF_ERROR(
        kg::Rope(q, m.positions, T, shape.q_heads, shape.head_dim, c.rope_theta, stream));
    RETURN_IF_ERROR(
        kg::Rope(k, m.positions, T, shape.kv_heads, shape.head_dim, c.rope_theta, stream));
    const int64_t idx = memory->index_within_type(static_cast<int>(layer));
    bf16_t* attn16 = H16(kAct16);
    if (L.type == LayerType::kAttn) {
      const auto [k_pages, v_pages] = pools.KvPages(idx);
      const int64_t page_size = pools.kv_shape().page_size;
      RETURN_IF_ERROR(Mark("attn.paged"));
      RETURN_IF_ERROR(kg::PagedKvWrite(k, v, m.attn, m.token_seq, m.positions, T, shape, page_size,
                                       k_pages, v_pages, stream));
      RETURN_IF_ERROR(kg::PagedAttention(q, m.attn, m.seqs, T, m.max_tokens, m.max_context, shape,
                                         page_size, k_pages, v_pages, splits, F(kAttnWs), nullptr,
                                         attn16, stream));
    } else {
      RETURN_IF_ERROR(Mark("attn.window"));
      RETURN_IF_ERROR(kg::WindowAttention(q, k, v, m.swa + idx * m.seqs, m.seqs, T, m.max_tokens,
                                          m.max_context, shape, c.swa_window_size, m.swa_splits,
                                          F(kAttnWs), nullptr, attn16, stream));
    }
    RETURN_IF_ERROR(Mark("attn.o_proj"));
    return Linear(attn16, T, L.o, F(kDelta));
  }

  absl::Status JetMixer(const DeviceLayer& L, int64_t layer, const Meta& m) {
    const JetConfig& j = config.jet;
    const int64_t T = m.tokens, hj = j.num_heads;
    const kg::JetShapeDev shape = JetShape();
    float *q = F(kQ), *k = F(kK), *u = F(kV), *gate = F(kGate), *a = F(kA), *b = F(kB),
          *gen = F(kGen), *kern = F(kKern), *conv = F(kConv), *o = F(kO);
    const bf16_t* hn = H16(kHn16);
    RETURN_IF_ERROR(Mark("jet.in_proj"));
    if (L.in_proj.w != nullptr) {
      RETURN_IF_ERROR(Linear(hn, T, L.in_proj, F(kInProj)));  // [T, q|k|v|g|a|b|gen]
      kg::ColumnSplitDev parts = L.in_parts;
      float* dst[] = {q, k, u, gate, a, b, gen};
      std::copy(std::begin(dst), std::end(dst), parts.dst);
      RETURN_IF_ERROR(kg::SplitColumns(F(kInProj), T, L.in_proj.rows, parts, stream));
    } else {
      RETURN_IF_ERROR(Linear(hn, T, L.q, q));
      RETURN_IF_ERROR(Linear(hn, T, L.k, k));
      RETURN_IF_ERROR(Linear(hn, T, L.v, u));
      RETURN_IF_ERROR(Linear(hn, T, L.g, gate));
      RETURN_IF_ERROR(Linear(hn, T, L.a, a));
      RETURN_IF_ERROR(Linear(hn, T, L.b, b));
      RETURN_IF_ERROR(Linear(hn, T, L.conv_w1, gen));
    }
    RETURN_IF_ERROR(Mark("jet.act"));
    RETURN_IF_ERROR(kg::SiluL2NormHeads(q, T, hj, j.head_dim, 1e-6f,
                                        1.0f / std::sqrt(static_cast<float>(j.head_dim)), stream));
    RETURN_IF_ERROR(kg::SiluL2NormHeads(k, T, hj, j.head_dim, 1e-6f, 1.0f, stream));
    RETURN_IF_ERROR(kg::JetGates(a, b, L.a_log, L.dt_bias, T, hj, stream));
    bf16_t* gen16 = H16(kAct16);
    RETURN_IF_ERROR(kg::Silu(gen, T * j.generator_dim(), nullptr, gen16, stream));
    RETURN_IF_ERROR(Mark("jet.conv_gen"));
    RETURN_IF_ERROR(Linear(gen16, T, L.conv_w2, kern));
    RETURN_IF_ERROR(kg::AddBias(kern, L.conv_w2_bias, T, L.conv_w2.rows, stream));
    const int64_t idx = memory->index_within_type(static_cast<int>(layer));
    const kg::JetSeqDev* seqs = m.jet + idx * m.seqs;
    RETURN_IF_ERROR(Mark("jet.conv"));
    RETURN_IF_ERROR(
        kg::DynamicCausalConv(u, kern, seqs, m.seqs, m.token_seq, T, shape, conv, stream));
    // Prefill chunks: a chunked form (a few sequential steps per 64 tokens); decode steps:
    // the recurrent form, its state tile in registers (GdrFormOf).
    RETURN_IF_ERROR(Mark("jet.gdr"));
    const GdrForm gdr = GdrFormOf(m);
    switch (gdr) {
      case GdrForm::kWy:
      case GdrForm::kWyTensorCores:
        RETURN_IF_ERROR(kg::GatedDeltaRuleWy(q, k, conv, a, b, seqs, m.seqs, T, m.max_tokens, shape,
                                             F(kGdrWs), o, stream, gdr == GdrForm::kWyTensorCores));
        break;
      case GdrForm::kChunked:
        RETURN_IF_ERROR(kg::GatedDeltaRuleChunked(q, k, conv, a, b, seqs, m.seqs, m.max_tokens,
                                                  shape, o, stream));
        break;
      case GdrForm::kRecurrent:
        RETURN_IF_ERROR(
            kg::GatedDeltaRuleRecurrent(q, k, conv, a, b, seqs, m.seqs, shape, o, stream));
        break;
    }
    bf16_t* o16 = H16(kAct16);
    RETURN_IF_ERROR(Mark("jet.out_norm"));
    RETURN_IF_ERROR(kg::GatedRmsNorm(o, gate, L.o_norm, T, hj, j.value_head_dim, j.norm_eps,
                                     nullptr, o16, stream));
    RETURN_IF_ERROR(Mark("jet.o_proj"));
    return Linear(o16, T, L.o, F(kDelta));
  }

  // The step's metadata on the device and every buffer sized for it.
  absl::StatusOr<Meta> Prepare(const ForwardBatch& batch, int64_t pad_to, int64_t* splits) {
    RETURN_IF_ERROR(pending);
    if (memory == nullptr) {
      return absl::FailedPreconditionError("CUDA backend has no memory attached");
    }
    linear->set_tuning(gemm_tuning && IsDecodeStep(batch));
    // Incremental block tables: the pages added since each row was written, scattered before
    // any kernel (and outside any graph capture: their number varies step to step). The mirror
    // counts them uploaded when the metadata is written; if anything fails before the scatter is
    // queued, every row is rewritten whole next time instead of trusting it.
    absl::StatusOr<Meta> built = BuildMeta(batch, pad_to);
    absl::Status queued = built.status();
    if (queued.ok()) {
      queued = kg::ScatterInt32(built->table_updates, built->updates, pools.tables(),
                                (pools.num_slots() + 1) * pools.table_stride(), stream);
    }
    if (!queued.ok()) {
      pools.table_mirror() = BlockTableMirror(pools.table_mirror().rows());
      return queued;
    }
    Meta m = *built;
    const kg::AttnShapeDev shape{config.num_attention_heads, config.num_key_value_heads,
                                 config.head_dim};
    // Rounded (GraphSplitCount): a decode graph is captured per (bucket, splits, swa splits),
    // and the split count grows with the context.
    *splits = GraphSplitCount(
        kg::ChooseAttentionSplits(m.seqs, m.max_tokens, m.max_context, shape, device.sm_count));
    m.swa_splits = GraphSplitCount(kg::ChooseAttentionSplits(
        m.seqs, m.max_tokens, std::min<int64_t>(m.max_context, config.swa_window_size), shape,
        device.sm_count));
    RETURN_IF_ERROR(EnsureWorkspace(m, std::max(*splits, m.swa_splits)));
    return m;
  }

  // Enqueues the model (no host synchronisation, no allocation: capturable); leaves [rows, V]
  // logits in F(kLogits).
  absl::Status Enqueue(const Meta& m, int64_t splits) {
    const ModelConfig& c = config;
    const int64_t T = m.tokens, H = c.hidden_size, I = c.intermediate_size;
    float* x = F(kX);
    bf16_t* hn = H16(kHn16);
    RETURN_IF_ERROR(Mark("embed"));
    RETURN_IF_ERROR(kg::EmbeddingGather(weights.embed, c.vocab_size, H, m.ids, T, x, stream));
    for (int64_t l = 0; l < static_cast<int64_t>(weights.layers.size()); ++l) {
      const DeviceLayer& L = weights.layers[l];
      RETURN_IF_ERROR(Mark("norm"));
      RETURN_IF_ERROR(kg::RmsNorm(x, L.input_norm, T, H, c.rms_norm_eps, nullptr, hn, stream));
      if (L.type == LayerType::kJet) {
        RETURN_IF_ERROR(JetMixer(L, l, m));
      } else {
        RETURN_IF_ERROR(AttentionMixer(L, l, m, splits));
      }
      RETURN_IF_ERROR(Mark("norm"));
      RETURN_IF_ERROR(
          kg::AddRmsNorm(x, F(kDelta), L.post_norm, T, H, c.rms_norm_eps, nullptr, hn, stream));
      RETURN_IF_ERROR(Mark("mlp.gate_up"));
      RETURN_IF_ERROR(Linear(hn, T, L.gate_up, F(kGU)));
      bf16_t* act = H16(kAct16);
      RETURN_IF_ERROR(Mark("mlp.act"));
      RETURN_IF_ERROR(kg::SiluMul(F(kGU), T, I, nullptr, act, stream));
      RETURN_IF_ERROR(Mark("mlp.down"));
      RETURN_IF_ERROR(Linear(act, T, L.down, F(kDelta)));
      RETURN_IF_ERROR(Mark("norm"));
      RETURN_IF_ERROR(kg::AddInPlace(x, F(kDelta), T * H, stream));
    }
    RETURN_IF_ERROR(Mark("head.norm"));
    RETURN_IF_ERROR(kg::GatherRows(x, m.last_rows, m.rows, H, F(kSel), stream));
    RETURN_IF_ERROR(
        kg::RmsNorm(F(kSel), weights.final_norm, m.rows, H, c.rms_norm_eps, nullptr, hn, stream));
    RETURN_IF_ERROR(Mark("head.lm_head"));
    return Linear(hn, m.rows, weights.lm_head, F(kLogits));
  }

  // Greedy sampling of every row and the ids' copy into pinned host memory (capturable).
  absl::Status EnqueueGreedy(const Meta& m) {
    auto* results = bufs[kResults].as<kg::SampleResultDev>();
    RETURN_IF_ERROR(Mark("sample"));
    RETURN_IF_ERROR(kg::SampleRows(F(kLogits), m.rows, config.vocab_size, m.sampling,
                                   F(kSampleScratch), results, stream));
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(ids_host, sizeof(int32_t), results,
                                           sizeof(kg::SampleResultDev), sizeof(int32_t), m.rows,
                                           cudaMemcpyDeviceToHost, stream));
    return absl::OkStatus();
  }

  // ---- CUDA graphs for decode steps (cuda_graphs.h) ----
  DecodeGraphCache decode_graphs;
  bool graphs_enabled = true;   // JETSERVE_CUDA_GRAPHS=0: every step uncaptured
  int32_t* ids_host = nullptr;  // pinned, [ids_host_capacity]: the greedy ids' copy
  int64_t ids_host_capacity = 0;

  absl::Status EnsureIdsHost(int64_t n) {
    if (n <= ids_host_capacity) return absl::OkStatus();
    // Graphs copy into ids_host: they go before it does.
    decode_graphs.Clear();
    if (ids_host != nullptr) CUDA_RETURN_IF_ERROR(cudaFreeHost(ids_host));
    ids_host = nullptr;
    ids_host_capacity = 0;
    const int64_t want = std::max<int64_t>(n, DecodeGraphCache::kMaxBatch);
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&ids_host, want * sizeof(int32_t)));
    ids_host_capacity = want;
    return absl::OkStatus();
  }

  static bool IsDecodeStep(const ForwardBatch& batch) {
    for (const BatchSequence& s : batch.seqs) {
      if (s.num_tokens != 1 || s.all_logits) return false;
    }
    return !batch.seqs.empty();
  }

  // The forward pass (logits left in F(kLogits), `rows` of them including padding), plus greedy
  // ids into ids_host when `greedy`; decode steps replay a graph. Returns the step's metadata.
  absl::StatusOr<Meta> Step(const ForwardBatch& batch, bool greedy) {
    const int64_t n = static_cast<int64_t>(batch.seqs.size());
    const bool graph =
        graphs_enabled && !profiler.on() && IsDecodeStep(batch) && n <= DecodeGraphCache::kMaxBatch;
    const int64_t bucket = graph ? DecodeGraphCache::Bucket(n) : n;
    // The greedy ids: one per logits row, at most a row per token, or the bucket's padded rows.
    if (greedy) {
      RETURN_IF_ERROR(
          EnsureIdsHost(std::max<int64_t>(bucket, static_cast<int64_t>(batch.token_ids.size()))));
    }
    int64_t splits = 1;
    ASSIGN_OR_RETURN(Meta m, Prepare(batch, graph ? bucket : 0, &splits));
    auto enqueue = [&]() -> absl::Status {
      RETURN_IF_ERROR(Enqueue(m, splits));
      return greedy ? EnqueueGreedy(m) : absl::OkStatus();
    };
    if (!graph) {
      RETURN_IF_ERROR(enqueue());
      RETURN_IF_ERROR(profiler.Collect(stream));
      return m;
    }
    // The metadata copy was enqueued by Prepare, before any capture begins.
    RETURN_IF_ERROR(decode_graphs.Run({bucket, splits, m.swa_splits, greedy}, stream, enqueue));
    return m;
  }
};

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const Model& model, const CudaBackendOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->model = &model;
  impl->config = model.config();
  if (const char* in_proj = std::getenv("JETSERVE_CUDA_IN_PROJ"); in_proj != nullptr) {
    impl->fused_in_proj = std::string(in_proj) == "fused";
  }
  if (const char* tune = std::getenv("JETSERVE_CUDA_GEMM_TUNE"); tune != nullptr) {
    impl->gemm_tuning = std::string(tune) == "1";
  }
  if (const char* t = std::getenv("JETSERVE_CUDA_TABLES"); t != nullptr) {
    impl->incremental_tables = std::string(t) == "incremental";
  }
  if (const char* gdr = std::getenv("JETSERVE_CUDA_GDR"); gdr != nullptr) {
    const std::string form = gdr;
    using Form = Impl::GdrForm;
    impl->gdr_prefill = form == "recurrent" ? Form::kRecurrent
                        : form == "wy"      ? Form::kWy
                        : form == "wy_tc"   ? Form::kWyTensorCores
                                            : Form::kChunked;
  }
  if (const char* sampling = std::getenv("JETSERVE_CUDA_SAMPLING"); sampling != nullptr) {
    impl->device_sampling = std::string(sampling) != "0";
  }
  // JETSERVE_CUDA_GRAPHS=0: decode steps run uncaptured (to rule graphs out).
  if (const char* graphs = std::getenv("JETSERVE_CUDA_GRAPHS"); graphs != nullptr) {
    impl->graphs_enabled = std::string(graphs) != "0";
  }
  ASSIGN_OR_RETURN(impl->device, kg::OpenDevice(options.device));
  const ModelConfig& c = impl->config;
  if (c.has_layer_type(LayerType::kJet) &&
      (c.jet.head_dim > 256 || c.jet.conv_size > 8 || c.jet.conv_size < 1)) {
    return absl::UnimplementedError(
        absl::StrCat("CUDA backend supports jet head_dim <= 256 and conv_size 1..8; the model has ",
                     c.jet.head_dim, " and ", c.jet.conv_size));
  }
  if (c.head_dim > 256 || c.head_dim % 2 != 0 ||
      c.num_attention_heads / std::max(1, c.num_key_value_heads) > 32) {
    return absl::UnimplementedError(
        "CUDA attention supports even head_dim <= 256, GQA group <= 32");
  }
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  ASSIGN_OR_RETURN(impl->linear, kg::CublasLtLinear::Create());
  RETURN_IF_ERROR(impl->weights.Upload(model, impl->fused_in_proj));
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

std::string CudaBackend::name() const { return "cuda"; }

absl::Status CudaBackend::AttachMemory(HybridMemory& memory) {
  Impl& d = *impl_;
  if (d.memory != nullptr)
    return absl::FailedPreconditionError("CUDA backend memory attached twice");
  RETURN_IF_ERROR(d.pools.Allocate(memory, d.config.max_position_embeddings, d.incremental_tables));
  d.memory = &memory;  // only once the pools exist: Forward builds descriptors from them
  memory.set_observer(this);
  return absl::OkStatus();
}

// The observer's callbacks cannot fail: an error is kept for the next step to report.
void CudaBackend::StateSlotHandedOut(int32_t slot) {
  Impl& d = *impl_;
  if (d.pending.ok()) d.pending = d.pools.ZeroSlot(slot, d.stream);
}

void CudaBackend::Forked(const SequenceMemory& from, const SequenceMemory& to, int64_t tokens) {
  Impl& d = *impl_;
  if (d.pending.ok()) d.pending = d.pools.Copy(from, to, tokens, d.stream);
}

absl::Status CudaBackend::Forward(const ForwardBatch& batch, HybridMemory& memory,
                                  std::vector<float>* logits) {
  Impl& d = *impl_;
  int64_t splits = 1;
  ASSIGN_OR_RETURN(Impl::Meta m, d.Prepare(batch, 0, &splits));
  RETURN_IF_ERROR(d.Enqueue(m, splits));
  RETURN_IF_ERROR(d.profiler.Collect(d.stream));
  logits->resize(m.rows * d.config.vocab_size);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits->data(), d.F(Impl::kLogits),
                                       logits->size() * sizeof(float), cudaMemcpyDeviceToHost,
                                       d.stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(d.stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::ForwardGreedy(const ForwardBatch& batch, HybridMemory& memory,
                                        std::vector<int32_t>* ids) {
  Impl& d = *impl_;
  ASSIGN_OR_RETURN(Impl::Meta m, d.Step(batch, /*greedy=*/true));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(d.stream));
  ids->assign(d.ids_host, d.ids_host + m.real_rows);
  return absl::OkStatus();
}

bool CudaBackend::CanSample(const SamplingParams& params) const {
  return impl_->device_sampling && params.top_logprobs <= kg::kMaxTopLogprobs;
}

absl::Status CudaBackend::ForwardKeepLogits(const ForwardBatch& batch, HybridMemory& memory) {
  Impl& d = *impl_;
  ASSIGN_OR_RETURN(Impl::Meta m, d.Step(batch, /*greedy=*/false));
  d.kept_rows = m.real_rows;  // padding rows (graph buckets) are never sampled
  return absl::OkStatus();
}

// One H2D copy of the rows' parameters and id lists, the sampling kernel, one D2H copy of the
// results, one synchronisation.
absl::Status CudaBackend::SampleLast(const std::vector<SampleSpec>& specs,
                                     std::vector<SampledToken>* tokens) {
  Impl& d = *impl_;
  const int64_t n = static_cast<int64_t>(specs.size());
  tokens->assign(n, SampledToken{});
  if (n == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(const SampleArena arena, SampleArena::Pack(specs, d.kept_rows));
  const size_t results_bytes = n * sizeof(kg::SampleResultDev);
  RETURN_IF_ERROR(d.EnsureBuffer(Impl::kSampleArena, arena.bytes()));
  RETURN_IF_ERROR(d.EnsureBuffer(Impl::kResults, results_bytes));
  RETURN_IF_ERROR(d.EnsureBuffer(Impl::kSampleScratch, n * d.config.vocab_size * 4));
  RETURN_IF_ERROR(d.EnsureSampleStaging(std::max(arena.bytes(), results_bytes)));
  char* dev = d.bufs[Impl::kSampleArena].as<char>();
  char* host = static_cast<char*>(d.sample_staging);
  arena.WriteTo(host, dev);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dev, host, arena.bytes(), cudaMemcpyHostToDevice, d.stream));
  auto* results = d.bufs[Impl::kResults].as<kg::SampleResultDev>();
  RETURN_IF_ERROR(kg::SampleRows(d.F(Impl::kLogits), n, d.config.vocab_size,
                                 reinterpret_cast<const kg::SamplingRowDev*>(dev),
                                 d.F(Impl::kSampleScratch), results, d.stream));
  // Into the same pinned buffer: stream order puts this after the upload above has been read.
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host, results, results_bytes, cudaMemcpyDeviceToHost, d.stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(d.stream));
  const auto* res = reinterpret_cast<const kg::SampleResultDev*>(host);
  for (int64_t i = 0; i < n; ++i) {
    SampledToken& t = (*tokens)[i];
    t.id = res[i].id;
    if (arena.row(i).logprobs != 0) {
      t.logprob = res[i].logprob;
      for (int32_t k = 0; k < arena.row(i).top_logprobs; ++k) {
        t.top.emplace_back(res[i].top_ids[k], res[i].top_logprobs[k]);
      }
    }
  }
  return absl::OkStatus();
}

int64_t CudaBackend::weight_bytes() const { return impl_->weights.bytes; }
int64_t CudaBackend::pool_bytes() const { return impl_->pools.bytes(); }
int CudaBackend::sm_count() const { return impl_->device.sm_count; }
bool CudaBackend::incremental_tables() const { return impl_->pools.tables() != nullptr; }
std::string CudaBackend::device_name() const { return impl_->device.name; }

void CudaBackend::SetProfiling(bool on) { impl_->profiler.Enable(on); }

std::map<std::string, double> CudaBackend::TakeProfile(int64_t* steps) {
  return impl_->profiler.Take(steps);
}
absl::Status CudaBackend::Synchronize() {
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  return absl::OkStatus();
}

}  // namespace jetserve
