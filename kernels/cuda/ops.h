// The forward pass's ops on a CUDA device: the same math and argument meaning as the CPU ops in
// kernels/cpu (elementwise.h, attention.h, jet_ops.h), with device pointers and a stream. Each
// checks its shapes on entry and returns the launch's status; nothing here synchronises.
//
// Element types: the residual stream, projections' outputs, attention and jet-recurrence math
// are fp32; the inputs of every GEMM (normed activations) and the weights are bf16 (bf16_t is
// the raw bfloat16 bits, as kernels/dtype.h's FloatToBf16 produces); the KV pages and swa rings
// are bf16; the jet state and conv tail are fp32. Ops that feed a GEMM write either or both of
// an fp32 and a bf16 output (a null pointer skips that one).
#ifndef JETSERVE_KERNELS_CUDA_OPS_H_
#define JETSERVE_KERNELS_CUDA_OPS_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <optional>

#include "absl/status/status.h"

namespace jetserve::kernels::cuda {

using bf16_t = uint16_t;  // bfloat16 bits

// ---- elementwise.cu ------------------------------------------------------------------------

// out[t, :] = table[ids[t], :] as fp32. table: [vocab, dim] bf16; ids: [tokens]; out: [tokens,
// dim]. Ids outside [0, vocab) give a zero row (the host validates ids before).
absl::Status EmbeddingGather(const bf16_t* table, int64_t vocab, int64_t dim, const int32_t* ids,
                             int64_t tokens, float* out, cudaStream_t stream);

// out = w * x / sqrt(mean(x²) + eps) per row. x: [rows, dim]; w: [dim] fp32.
absl::Status RmsNorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps,
                     float* out_f32, bf16_t* out_bf16, cudaStream_t stream);

// residual += delta (if delta is not null); then out = RmsNorm(residual). [rows, dim] each.
absl::Status AddRmsNorm(float* residual, const float* delta, const float* w, int64_t rows,
                        int64_t dim, float eps, float* out_f32, bf16_t* out_bf16,
                        cudaStream_t stream);

// residual[i] += delta[i], n elements.
absl::Status AddInPlace(float* residual, const float* delta, int64_t n, cudaStream_t stream);

// y[r, c] += bias[c]. y: [rows, cols]; bias: [cols].
absl::Status AddBias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, dim + i]. gate_up: [rows, 2*dim] (the gate and up
// projections as one GEMM output); out: [rows, dim].
absl::Status SiluMul(const float* gate_up, int64_t rows, int64_t dim, float* out_f32,
                     bf16_t* out_bf16, cudaStream_t stream);

// out[i] = silu(x[i]) (out_f32 may be x), n elements.
absl::Status Silu(const float* x, int64_t n, float* out_f32, bf16_t* out_bf16, cudaStream_t stream);

// out[i] = bf16(x[i]), n elements.
absl::Status CastToBf16(const float* x, int64_t n, bf16_t* out, cudaStream_t stream);

// Rotate-half RoPE in place, as kernels::cpu::Rope. x: [tokens, heads, head_dim]; positions:
// [tokens] (device).
absl::Status Rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads,
                  int64_t head_dim, double theta, cudaStream_t stream);

// The jet q/k preparation in place: x = silu(x), then per head x / sqrt(sum(x²) + eps) * scale
// (kernels::cpu::SiluInPlace then L2NormHeads). x: [rows, heads, dim].
absl::Status SiluL2NormHeads(float* x, int64_t rows, int64_t heads, int64_t dim, float eps,
                             float scale, cudaStream_t stream);

// kernels::cpu::JetGates: a -> g = -exp(A_log) softplus(a + dt_bias); b -> beta = sigmoid(b).
// a, b: [tokens, heads]; a_log, dt_bias: [heads].
absl::Status JetGates(float* a, float* b, const float* a_log, const float* dt_bias, int64_t tokens,
                      int64_t heads, cudaStream_t stream);

// out[t, h] = RMSNorm(o[t, h]; w, eps) * silu(gate[t, h]) (kernels::cpu::GatedRmsNorm).
// o, gate: [tokens, heads, dim]; w: [dim]; out: [tokens, heads, dim] (out_f32 may be o).
absl::Status GatedRmsNorm(const float* o, const float* gate, const float* w, int64_t tokens,
                          int64_t heads, int64_t dim, float eps, float* out_f32, bf16_t* out_bf16,
                          cudaStream_t stream);

// out[i, :] = x[rows[i], :]. x: [*, dim]; rows: [n] (device); out: [n, dim].
absl::Status GatherRows(const float* x, const int32_t* rows, int64_t n, int64_t dim, float* out,
                        cudaStream_t stream);

// Column ranges of a [rows, width] matrix, each copied to its own [rows, widths[i]] matrix: the
// outputs of a fused projection (one GEMM over concatenated weights) back in the separate
// buffers the next ops read. The widths sum to `width`.
struct ColumnSplitDev {
  static constexpr int kMaxParts = 8;
  int count = 0;
  int64_t widths[kMaxParts] = {};
  float* dst[kMaxParts] = {};
};
absl::Status SplitColumns(const float* src, int64_t rows, int64_t width,
                          const ColumnSplitDev& parts, cudaStream_t stream);

// dst[pairs[2i]] = pairs[2i + 1] for i < count (the incremental block tables' updates).
// pairs: [count, 2] (device); dst: [dst_size]. An index outside [0, dst_size) is dropped (the
// device cannot report it; the host plans the indices, cuda_step_meta.cc).
absl::Status ScatterInt32(const int32_t* pairs, int64_t count, int32_t* dst, int64_t dst_size,
                          cudaStream_t stream);

// Copies KV pages for a fork (n > 1): base holds `planes` pools of `plane_stride` elements
// each (an attn layer's K, its V, the next layer's K, ...), pages of `page` elements; for each of
// `count` pairs (src, dst) of page indices (device, [count, 2]) every plane's page src is copied
// to its page dst. One launch for all layers and pages.
absl::Status CopyPages(bf16_t* base, int64_t planes, int64_t plane_stride, int64_t page,
                       const int32_t* pairs, int64_t count, cudaStream_t stream);

// y = x Wᵀ on CUDA cores (32x32 output tiles through shared memory), fp32 accumulation: the
// fallback of CublasLtLinear for shapes cuBLASLt's bf16 kernels do not take (cols not a multiple
// of 8, or fp32 output rows not 16-byte aligned), e.g. the tiny test checkpoints. x: [tokens,
// cols] bf16; w: [rows, cols] bf16; y: [tokens, rows] fp32.
absl::Status GemmBf16Fallback(const bf16_t* x, int64_t tokens, const bf16_t* w, int64_t rows,
                              int64_t cols, float* y, cudaStream_t stream);

// ---- jet_ops.cu --------------------------------------------------------------------------

// One sequence's slice of a flat token batch and its jet state, in device memory.
struct JetSeqDev {
  int32_t token_offset = 0;
  int32_t num_tokens = 0;
  float* state = nullptr;      // [heads, key_dim, value_dim] fp32, updated in place
  float* conv_tail = nullptr;  // [conv_size-1, channels] fp32, oldest first
};

struct JetShapeDev {
  int64_t heads = 0;      // Hj
  int64_t key_dim = 0;    // Dk per head
  int64_t value_dim = 0;  // Dv per head
  int64_t conv_size = 0;  // W (at most 8)
  int64_t channels() const { return heads * value_dim; }
};

// kernels::cpu::DynamicCausalConv. u: [tokens, channels]; kern: [tokens, channels, W];
// token_seq: [tokens] index into seqs of each row's sequence; out: [tokens, channels]. Then
// every sequence's conv_tail holds its last W-1 inputs.
absl::Status DynamicCausalConv(const float* u, const float* kern, const JetSeqDev* seqs,
                               int64_t num_seqs, const int32_t* token_seq, int64_t tokens,
                               const JetShapeDev& shape, float* out, cudaStream_t stream);

// kernels::cpu::GatedDeltaRule, token by token (the recurrent form): every (sequence, head,
// 32-column tile of S) is one block that keeps its part of S in registers across the
// sequence's tokens, reading and writing the state once. Exact for any token count; the decode
// path. q, k: [tokens, heads, Dk]; v: [tokens, heads, Dv]; g, beta: [tokens, heads];
// out: [tokens, heads, Dv]. Dk <= 256.
absl::Status GatedDeltaRuleRecurrent(const float* q, const float* k, const float* v, const float* g,
                                     const float* beta, const JetSeqDev* seqs, int64_t num_seqs,
                                     const JetShapeDev& shape, float* out, cudaStream_t stream);

// The recurrent form's kernel: kBlocks (the default) — a block of 8 warps per 32 columns of S,
// each warp a slice of the rows, Sᵀk and Sᵀq reduced across the warps; kWarps — each warp its
// own 16 columns, two lanes a column (each half the rows), no block barrier (Dk <= 128, else
// kBlocks). Default: JETSERVE_CUDA_GDR_DECODE=warps in the environment, else kBlocks (kWarps has
// not run on a GPU yet). std::nullopt: back to the environment's choice.
enum class GdrRecurrentForm { kBlocks, kWarps };
void SetGdrRecurrentForm(std::optional<GdrRecurrentForm> form);

// The chunked form of the same recurrence for prefill, in one kernel: chunks of 64 tokens (32
// when Dk > 128), within-chunk work as dense products (the new values by forward substitution),
// the state carried between chunks. Same contract as GatedDeltaRuleRecurrent; `max_tokens`
// bounds any sequence's num_tokens (grid sizing).
absl::Status GatedDeltaRuleChunked(const float* q, const float* k, const float* v, const float* g,
                                   const float* beta, const JetSeqDev* seqs, int64_t num_seqs,
                                   int64_t max_tokens, const JetShapeDev& shape, float* out,
                                   cudaStream_t stream);

// ---- delta_rule_wy.cu ----------------------------------------------------------------------

// The chunked form in the WY / UT-transform split (delta_rule_wy.cu): one kernel builds each
// chunk's W, U and masked QK — independent of the state, so every chunk of every sequence runs
// in parallel — and a second carries the state through each sequence's chunks with three dense
// products per chunk. Same contract as GatedDeltaRuleChunked, plus `tokens` (the rows of q, k,
// v, g, beta and out; every sequence's rows lie in [0, tokens)) and a device workspace of
// GatedDeltaRuleWyWorkspaceFloats(tokens, shape) floats. tensor_cores: the chunk products as
// tf32 tensor-core tiles with fp32 accumulation (the state stays fp32), else fp32 CUDA cores.
int64_t GatedDeltaRuleWyWorkspaceFloats(int64_t tokens, const JetShapeDev& shape);
absl::Status GatedDeltaRuleWy(const float* q, const float* k, const float* v, const float* g,
                              const float* beta, const JetSeqDev* seqs, int64_t num_seqs,
                              int64_t tokens, int64_t max_tokens, const JetShapeDev& shape,
                              float* workspace, float* out, cudaStream_t stream,
                              bool tensor_cores = false);

// ---- attention.cu ------------------------------------------------------------------------

// One sequence's slice of a flat token batch for attention, in device memory.
struct AttnSeqDev {
  int32_t token_offset = 0;
  int32_t num_tokens = 0;
  int32_t start_position = 0;            // absolute position of its first token
  const int32_t* block_table = nullptr;  // paged: page of positions [i*P, (i+1)*P)
  bf16_t* k_ring = nullptr;              // window: [window, kv_heads, head_dim]
  bf16_t* v_ring = nullptr;
};

struct AttnShapeDev {
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;  // even, at most 256
};

// Writes k, v [tokens, kv_heads, head_dim] (fp32) as bf16 into the pages of each row's sequence
// at positions[row]. pages: [num_pages, page_size, kv_heads, head_dim].
absl::Status PagedKvWrite(const float* k, const float* v, const AttnSeqDev* seqs,
                          const int32_t* token_seq, const int32_t* positions, int64_t tokens,
                          const AttnShapeDev& shape, int64_t page_size, bf16_t* k_pages,
                          bf16_t* v_pages, cudaStream_t stream);

// Attention work split: sequences are cut into tiles of query rows, keys into `splits` ranges
// whose partial results a second kernel combines (split-K, so that one long decode spreads over
// many SMs). Workspace: AttentionWorkspaceFloats(tokens, shape, splits) floats.
int64_t AttentionWorkspaceFloats(int64_t tokens, const AttnShapeDev& shape, int64_t splits);
// The kernel decode steps' attention runs on (every sequence one token; shapes without an
// instantiation of the chosen kernel, and splits of more than 1,024 keys, take the generic one):
// the generic split-K kernel (K and V staged through shared memory as fp32), DecodeAttnKernel
// (K and V in registers, fp32 dot products on CUDA cores) or DecodeAttnTcKernel (bf16 wmma
// tiles: scores from bf16 q·scale, probabilities rounded to bf16, fp32 accumulation).
enum class DecodeAttention { kGeneric, kCudaCores, kTensorCores };
// Default: JETSERVE_CUDA_ATTN=decode (kCudaCores) or decode_tc (kTensorCores) in the
// environment, else kGeneric (the other two have not run on a GPU yet: see tests/gpu/README.md).
// std::nullopt: back to the environment's choice.
void SetDecodeAttentionKernel(std::optional<DecodeAttention> kernel);

// A split count for a step. Prefill: enough blocks to fill `sm_count` SMs at least twice, at
// least 256 keys per split, at most 64 splits. Decode (max_tokens 1): at most 1024 keys per
// split (the decode kernel's limit; beyond 1024 splits, the generic kernel runs), and enough
// blocks for 8 per SM where the context allows 256 keys per split.
int64_t ChooseAttentionSplits(int64_t num_seqs, int64_t max_tokens, int64_t max_context,
                              const AttnShapeDev& shape, int sm_count);

// kernels::cpu::PagedAttention's attention part (after PagedKvWrite): every query row attends to
// positions <= its own through its sequence's block table. q: [tokens, q_heads, head_dim]
// (fp32, RoPE applied); max_tokens: the largest num_tokens of any sequence; max_context: the
// largest start_position + num_tokens; out: [tokens, q_heads, head_dim]. With a decode kernel
// chosen (SetDecodeAttentionKernel), decode steps (every sequence one token) of the shapes it is
// built for (the 2B and 4B models' among them) run on it.
absl::Status PagedAttention(const float* q, const AttnSeqDev* seqs, int64_t num_seqs,
                            int64_t tokens, int64_t max_tokens, int64_t max_context,
                            const AttnShapeDev& shape, int64_t page_size, const bf16_t* k_pages,
                            const bf16_t* v_pages, int64_t splits, float* workspace, float* out_f32,
                            bf16_t* out_bf16, cudaStream_t stream);

// kernels::cpu::WindowAttention: position p attends to p-window+1 .. p, keys of positions
// before the sequence's start_position from its ring (slot position % window), the others from
// this step's k, v [tokens, kv_heads, head_dim]; then the last min(num_tokens, window) k/v rows
// are written into the ring. Same outputs as PagedAttention.
absl::Status WindowAttention(const float* q, const float* k, const float* v, const AttnSeqDev* seqs,
                             int64_t num_seqs, int64_t tokens, int64_t max_tokens,
                             int64_t max_context, const AttnShapeDev& shape, int64_t window,
                             int64_t splits, float* workspace, float* out_f32, bf16_t* out_bf16,
                             cudaStream_t stream);

}  // namespace jetserve::kernels::cuda

#endif  // JETSERVE_KERNELS_CUDA_OPS_H_
