// Softmax attention over paged KV (attn layers) and over a sliding-window ring (swa layers).
//
// One kernel serves prefill and decode: a block takes a tile of query tokens of one sequence
// for one kv head (all `group` query heads that share it: every K/V row it loads serves
// tile * group query rows), and one of `splits` ranges of the keys (split-K). Keys go through
// shared memory 32 at a time; each warp owns up to 4 query rows with an online softmax (running
// max m, sum l and the unnormalised output in registers, lane i holding dims i, i+32, ...). The
// partial (acc, m, l) of every (row, split) goes to a workspace that AttnCombineKernel merges.
#include "kernels/cuda/attention_internal.cuh"
#include "kernels/cuda/common.cuh"

namespace jetserve::kernels::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;  // query rows (token, head) per block
constexpr int kKeyTile = 32;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxDimPerLane = kMaxHeadDim / 32;

int64_t TileTokens(const AttnShapeDev& s) {
  const int64_t group = s.q_heads / s.kv_heads;
  return std::max<int64_t>(1, kRowsPerBlock / group);
}

size_t SharedBytes(int64_t hd) {
  return sizeof(float) * (kKeyTile * (hd + 1) + kKeyTile * hd + kRowsPerBlock * hd);
}

using attention_internal::kDecodeChunk;
using attention_internal::Params;

// 8 consecutive elements d .. d+7 of key and value row `pos` (zeros past kend) as fp32.
__device__ __forceinline__ void Bf16x8ToFloat(const bf16_t* src, float* out) {
  Bf16x8BitsToFloat(*reinterpret_cast<const uint4*>(src), out);
}

template <bool kWindow>
__device__ __forceinline__ void LoadRow8(const Params& p, const AttnSeqDev& s, int kvh, int pos,
                                         int kend, int d, float* kout, float* vout) {
  if (pos >= kend) {
#pragma unroll
    for (int i = 0; i < 8; ++i) kout[i] = vout[i] = 0.0f;
    return;
  }
  const int hd = p.hd;
  if constexpr (kWindow) {
    if (pos >= s.start_position) {
      const int64_t src =
          ((static_cast<int64_t>(s.token_offset) + pos - s.start_position) * p.kv_heads + kvh) *
              hd +
          d;
      const float4* k4 = reinterpret_cast<const float4*>(p.k + src);
      const float4* v4 = reinterpret_cast<const float4*>(p.v + src);
      const float4 k0 = k4[0], k1 = k4[1], v0 = v4[0], v1 = v4[1];
      kout[0] = k0.x, kout[1] = k0.y, kout[2] = k0.z, kout[3] = k0.w;
      kout[4] = k1.x, kout[5] = k1.y, kout[6] = k1.z, kout[7] = k1.w;
      vout[0] = v0.x, vout[1] = v0.y, vout[2] = v0.z, vout[3] = v0.w;
      vout[4] = v1.x, vout[5] = v1.y, vout[6] = v1.z, vout[7] = v1.w;
      return;
    }
    const int64_t src = (static_cast<int64_t>(pos % p.window) * p.kv_heads + kvh) * hd + d;
    Bf16x8ToFloat(s.k_ring + src, kout);
    Bf16x8ToFloat(s.v_ring + src, vout);
  } else {
    const int64_t page = s.block_table[pos / p.page_size];
    const int64_t src = ((page * p.page_size + pos % p.page_size) * p.kv_heads + kvh) * hd + d;
    Bf16x8ToFloat(p.k_pages + src, kout);
    Bf16x8ToFloat(p.v_pages + src, vout);
  }
}

template <bool kWindow>
__global__ void __launch_bounds__(kThreads) AttnKernel(Params p) {
  extern __shared__ float smem[];
  const int hd = p.hd;
  float* Ks = smem;                      // [kKeyTile][hd + 1]
  float* Vs = Ks + kKeyTile * (hd + 1);  // [kKeyTile][hd]
  float* Qs = Vs + kKeyTile * hd;        // [kRowsPerBlock][hd]
  const int seq_index = blockIdx.x / p.tiles_per_seq;
  const int tile = blockIdx.x % p.tiles_per_seq;
  const AttnSeqDev s = p.seqs[seq_index];
  const int first = tile * p.tile_tokens;
  if (first >= s.num_tokens) return;  // whole block: before any barrier
  const int nq = min(p.tile_tokens, s.num_tokens - first);
  const int rows = nq * p.group;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  const int pmin = s.start_position + first;
  const int pmax = pmin + nq - 1;
  const int kbeg = kWindow ? max(0, pmin - p.window + 1) : 0;
  const int kend = pmax + 1;
  const int ntiles = (kend - kbeg + kKeyTile - 1) / kKeyTile;
  const int per = (ntiles + p.splits - 1) / p.splits;
  const int t0 = split * per;
  const int t1 = min(ntiles, t0 + per);

  // Query rows: row r is token first + r / group, head kvh * group + r % group.
  for (int e = threadIdx.x; e < rows * hd; e += blockDim.x) {
    const int r = e / hd, d = e % hd;
    const int64_t token = s.token_offset + first + r / p.group;
    const int qh = kvh * p.group + r % p.group;
    Qs[r * hd + d] = p.q[(token * p.q_heads + qh) * hd + d];
  }

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kMaxDimPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) acc[rr][i] = 0.0f;
  }

  for (int kt = t0; kt < t1; ++kt) {
    const int key0 = kbeg + kt * kKeyTile;
    __syncthreads();  // Qs written (first pass) / the previous tile's Ks, Vs no longer read
    if (hd % 8 == 0) {
      // 16-byte loads: 8 bf16 (or 8 fp32 of this step's chunk, as two float4) per thread.
      const int vecs = hd / 8;
      for (int e = threadIdx.x; e < kKeyTile * vecs; e += blockDim.x) {
        const int j = e / vecs, d = (e % vecs) * 8;
        float kv[8], vv[8];
        LoadRow8<kWindow>(p, s, kvh, key0 + j, kend, d, kv, vv);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          Ks[j * (hd + 1) + d + i] = kv[i];
          Vs[j * hd + d + i] = vv[i];
        }
      }
    } else {
      for (int e = threadIdx.x; e < kKeyTile * hd; e += blockDim.x) {
        const int j = e / hd, d = e % hd;
        const int pos = key0 + j;
        float kval = 0.0f, vval = 0.0f;
        if (pos < kend) {
          if constexpr (kWindow) {
            if (pos >= s.start_position) {
              const int64_t src =
                  ((static_cast<int64_t>(s.token_offset) + pos - s.start_position) * p.kv_heads +
                   kvh) *
                      hd +
                  d;
              kval = p.k[src];
              vval = p.v[src];
            } else {
              const int64_t src =
                  (static_cast<int64_t>(pos % p.window) * p.kv_heads + kvh) * hd + d;
              kval = Bf16BitsToFloat(s.k_ring[src]);
              vval = Bf16BitsToFloat(s.v_ring[src]);
            }
          } else {
            const int64_t page = s.block_table[pos / p.page_size];
            const int64_t src =
                ((page * p.page_size + pos % p.page_size) * p.kv_heads + kvh) * hd + d;
            kval = Bf16BitsToFloat(p.k_pages[src]);
            vval = Bf16BitsToFloat(p.v_pages[src]);
          }
        }
        Ks[j * (hd + 1) + d] = kval;
        Vs[j * hd + d] = vval;
      }
    }
    __syncthreads();
    const int pos_j = key0 + lane;
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp + kWarps * rr;
      if (r >= rows) continue;  // uniform over the warp
      const int pr = pmin + r / p.group;
      const bool valid = pos_j <= pr && pos_j < kend && (!kWindow || pos_j > pr - p.window);
      float score = -INFINITY;
      if (valid) {
        const float* qr = Qs + r * hd;
        const float* kr = Ks + lane * (hd + 1);
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += qr[d] * kr[d];
        score = dot * p.scale;
      }
      const float tmax = WarpMax(score);
      if (tmax == -INFINITY) continue;  // no key of this tile for this row (uniform)
      const float mnew = fmaxf(m[rr], tmax);
      const float corr = expf(m[rr] - mnew);  // 0 while m is -inf
      const float pj = valid ? expf(score - mnew) : 0.0f;
      l[rr] = l[rr] * corr + WarpSum(pj);
#pragma unroll
      for (int i = 0; i < kMaxDimPerLane; ++i) acc[rr][i] *= corr;
      for (int jj = 0; jj < kKeyTile; ++jj) {
        const float pb = __shfl_sync(0xffffffffu, pj, jj);
        if (pb == 0.0f) continue;  // uniform: pb is the same in every lane
        const float* vr = Vs + jj * hd;
#pragma unroll
        for (int i = 0; i < kMaxDimPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < hd) acc[rr][i] += pb * vr[d];
        }
      }
      m[rr] = mnew;
    }
  }

  // Partials of every row this block owns, also for an empty key range (m = -inf, l = 0).
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp + kWarps * rr;
    if (r >= rows) continue;
    const int64_t token = s.token_offset + first + r / p.group;
    const int qh = kvh * p.group + r % p.group;
    float* w = p.ws + ((token * p.q_heads + qh) * p.splits + split) * (hd + 2);
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) w[d] = acc[rr][i];
    }
    if (lane == 0) {
      w[hd] = m[rr];
      w[hd + 1] = l[rr];
    }
  }
}

// One warp per (token, query head): out = Σ_s e^(m_s - M) acc_s / Σ_s e^(m_s - M) l_s.
__global__ void AttnCombineKernel(const float* __restrict__ ws, int64_t rows, int splits, int hd,
                                  float* __restrict__ out_f32, bf16_t* __restrict__ out_bf16) {
  const int64_t row = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* w = ws + row * splits * (hd + 2);
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, w[s * (hd + 2) + hd]);
  float L = 0.0f;
  if (M != -INFINITY) {
    for (int s = 0; s < splits; ++s) {
      const float* ws_s = w + s * (hd + 2);
      L += expf(ws_s[hd] - M) * ws_s[hd + 1];
    }
  }
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  for (int d = lane; d < hd; d += 32) {
    float o = 0.0f;
    if (M != -INFINITY) {
      for (int s = 0; s < splits; ++s) {
        const float* ws_s = w + s * (hd + 2);
        o += expf(ws_s[hd] - M) * ws_s[d];
      }
    }
    o *= inv;
    if (out_f32 != nullptr) out_f32[row * hd + d] = o;
    if (out_bf16 != nullptr) out_bf16[row * hd + d] = FloatToBf16Bits(o);
  }
}

__global__ void PagedKvWriteKernel(const float* __restrict__ k, const float* __restrict__ v,
                                   const AttnSeqDev* __restrict__ seqs,
                                   const int32_t* __restrict__ token_seq,
                                   const int32_t* __restrict__ positions, int64_t row_width,
                                   int page_size, bf16_t* __restrict__ k_pages,
                                   bf16_t* __restrict__ v_pages) {
  const int64_t t = blockIdx.x;
  const AttnSeqDev s = seqs[token_seq[t]];
  const int pos = positions[t];
  const int64_t slot =
      static_cast<int64_t>(s.block_table[pos / page_size]) * page_size + pos % page_size;
  for (int64_t i = threadIdx.x; i < row_width; i += blockDim.x) {
    k_pages[slot * row_width + i] = FloatToBf16Bits(k[t * row_width + i]);
    v_pages[slot * row_width + i] = FloatToBf16Bits(v[t * row_width + i]);
  }
}

// Block (sequence, i): the i-th of the sequence's last min(n, window) rows into its ring; rows
// over blockIdx.y, striding past the grid's 65,535 limit.
__global__ void RingWriteKernel(const float* __restrict__ k, const float* __restrict__ v,
                                const AttnSeqDev* __restrict__ seqs, int64_t row_width,
                                int window) {
  const AttnSeqDev s = seqs[blockIdx.x];
  const int kept = min(s.num_tokens, window);
  for (int i = blockIdx.y; i < kept; i += gridDim.y) {
    const int r = s.num_tokens - kept + i;
    const int64_t slot = (s.start_position + r) % window;
    const int64_t src = static_cast<int64_t>(s.token_offset) + r;
    for (int64_t e = threadIdx.x; e < row_width; e += blockDim.x) {
      s.k_ring[slot * row_width + e] = FloatToBf16Bits(k[src * row_width + e]);
      s.v_ring[slot * row_width + e] = FloatToBf16Bits(v[src * row_width + e]);
    }
  }
}

absl::Status CheckShape(const char* op, const AttnShapeDev& s, int64_t splits, int64_t num_seqs,
                        int64_t max_tokens) {
  if (s.kv_heads < 1 || s.q_heads < s.kv_heads || s.q_heads % s.kv_heads != 0 || s.head_dim < 2 ||
      s.head_dim > kMaxHeadDim || s.head_dim % 2 != 0 || s.q_heads / s.kv_heads > kRowsPerBlock ||
      splits < 1 || splits > 1024 || num_seqs < 0 || max_tokens < 0 || s.kv_heads > 65535) {
    return ShapeError(op, absl::StrCat("q_heads ", s.q_heads, ", kv_heads ", s.kv_heads,
                                       ", head_dim ", s.head_dim, " (even, <= ", kMaxHeadDim,
                                       "), group <= ", kRowsPerBlock, ", splits ", splits));
  }
  return absl::OkStatus();
}

// The generic kernel (any step: prefill tiles or decode).
template <bool kWindow>
absl::Status LaunchGeneric(const Params& p, int64_t num_seqs, int64_t max_tokens,
                           cudaStream_t stream) {
  const int64_t tiles = num_seqs * CeilDiv(max_tokens, p.tile_tokens);
  if (tiles > (int64_t{1} << 31) - 1) return ShapeError("Attention", "too many query tiles");
  const size_t shared = SharedBytes(p.hd);
  static size_t configured = 0;  // per kernel (template instance)
  if (absl::Status s = AllowDynamicShared(AttnKernel<kWindow>, shared, &configured); !s.ok()) {
    return s;
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.kv_heads),
                  static_cast<unsigned>(p.splits));
  AttnKernel<kWindow><<<grid, kThreads, shared, stream>>>(p);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

// Decode steps on the decode kernel where it takes them, everything else on the generic one;
// then the combine of the split-K partials. max_keys: the most keys any sequence's query
// attends to (its context, or the window).
template <bool kWindow>
absl::Status Launch(const Params& p, int64_t num_seqs, int64_t tokens, int64_t max_tokens,
                    int64_t max_keys, float* out_f32, bf16_t* out_bf16, cudaStream_t stream) {
  bool decoded = false;
  if (max_tokens == 1) {
    absl::StatusOr<bool> launched =
        attention_internal::LaunchDecodeAttention(p, kWindow, num_seqs, max_keys, stream);
    if (!launched.ok()) return launched.status();
    decoded = *launched;
  }
  if (!decoded) {
    if (absl::Status s = LaunchGeneric<kWindow>(p, num_seqs, max_tokens, stream); !s.ok()) {
      return s;
    }
  }
  const int64_t rows = tokens * p.q_heads;
  AttnCombineKernel<<<CeilDiv(rows * 32, 256), 256, 0, stream>>>(p.ws, rows, p.splits, p.hd,
                                                                 out_f32, out_bf16);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

Params BaseParams(const float* q, const AttnSeqDev* seqs, int64_t max_tokens,
                  const AttnShapeDev& shape, int64_t splits, float* workspace) {
  Params p{};
  p.q = q;
  p.seqs = seqs;
  p.tile_tokens = static_cast<int>(TileTokens(shape));
  p.tiles_per_seq = static_cast<int>(std::max<int64_t>(1, CeilDiv(max_tokens, p.tile_tokens)));
  p.q_heads = static_cast<int>(shape.q_heads);
  p.kv_heads = static_cast<int>(shape.kv_heads);
  p.group = static_cast<int>(shape.q_heads / shape.kv_heads);
  p.hd = static_cast<int>(shape.head_dim);
  p.splits = static_cast<int>(splits);
  p.scale = 1.0f / sqrtf(static_cast<float>(shape.head_dim));
  p.ws = workspace;
  return p;
}

}  // namespace

int64_t AttentionWorkspaceFloats(int64_t tokens, const AttnShapeDev& shape, int64_t splits) {
  return tokens * shape.q_heads * splits * (shape.head_dim + 2);
}

int64_t ChooseAttentionSplits(int64_t num_seqs, int64_t max_tokens, int64_t max_context,
                              const AttnShapeDev& shape, int sm_count) {
  if (shape.kv_heads < 1 || shape.q_heads < shape.kv_heads) return 1;
  if (max_tokens <= 1) {
    // Decode: at most kDecodeChunk keys per split (DecodeAttnKernel holds a split's scores in
    // shared memory), and enough blocks for 8 per SM, but no split under 256 keys for that.
    const int64_t keys = std::max<int64_t>(1, max_context);
    const int64_t blocks = std::max<int64_t>(1, num_seqs * shape.kv_heads);
    const int64_t fill = std::min(CeilDiv(8 * std::max(1, sm_count), blocks), CeilDiv(keys, 256));
    return std::clamp<int64_t>(std::max(CeilDiv(keys, kDecodeChunk), fill), 1, 1024);
  }
  const int64_t blocks = std::max<int64_t>(
      1, num_seqs * CeilDiv(std::max<int64_t>(1, max_tokens), TileTokens(shape)) * shape.kv_heads);
  int64_t splits = CeilDiv(2 * std::max(1, sm_count), blocks);
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, max_context / 256));
  return std::clamp<int64_t>(splits, 1, 64);
}

absl::Status PagedKvWrite(const float* k, const float* v, const AttnSeqDev* seqs,
                          const int32_t* token_seq, const int32_t* positions, int64_t tokens,
                          const AttnShapeDev& shape, int64_t page_size, bf16_t* k_pages,
                          bf16_t* v_pages, cudaStream_t stream) {
  if (tokens < 0 || page_size < 1 || shape.kv_heads < 1 || shape.head_dim < 1) {
    return ShapeError("PagedKvWrite", "bad shape");
  }
  if (tokens == 0) return absl::OkStatus();
  PagedKvWriteKernel<<<tokens, 128, 0, stream>>>(k, v, seqs, token_seq, positions,
                                                 shape.kv_heads * shape.head_dim,
                                                 static_cast<int>(page_size), k_pages, v_pages);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status PagedAttention(const float* q, const AttnSeqDev* seqs, int64_t num_seqs,
                            int64_t tokens, int64_t max_tokens, int64_t max_context,
                            const AttnShapeDev& shape, int64_t page_size, const bf16_t* k_pages,
                            const bf16_t* v_pages, int64_t splits, float* workspace, float* out_f32,
                            bf16_t* out_bf16, cudaStream_t stream) {
  if (absl::Status st = CheckShape("PagedAttention", shape, splits, num_seqs, max_tokens);
      !st.ok()) {
    return st;
  }
  if (page_size < 1) return ShapeError("PagedAttention", "page_size < 1");
  if (tokens == 0 || num_seqs == 0) return absl::OkStatus();
  Params p = BaseParams(q, seqs, max_tokens, shape, splits, workspace);
  p.page_size = static_cast<int>(page_size);
  p.k_pages = k_pages;
  p.v_pages = v_pages;
  return Launch<false>(p, num_seqs, tokens, max_tokens, max_context, out_f32, out_bf16, stream);
}

absl::Status WindowAttention(const float* q, const float* k, const float* v, const AttnSeqDev* seqs,
                             int64_t num_seqs, int64_t tokens, int64_t max_tokens,
                             int64_t max_context, const AttnShapeDev& shape, int64_t window,
                             int64_t splits, float* workspace, float* out_f32, bf16_t* out_bf16,
                             cudaStream_t stream) {
  if (absl::Status st = CheckShape("WindowAttention", shape, splits, num_seqs, max_tokens);
      !st.ok()) {
    return st;
  }
  if (window < 1 || num_seqs > (int64_t{1} << 31) - 1) {
    return ShapeError("WindowAttention",
                      absl::StrCat("window ", window, ", ", num_seqs, " sequences"));
  }
  if (tokens == 0 || num_seqs == 0) return absl::OkStatus();
  Params p = BaseParams(q, seqs, max_tokens, shape, splits, workspace);
  p.window = static_cast<int>(window);
  p.k = k;
  p.v = v;
  if (absl::Status st = Launch<true>(p, num_seqs, tokens, max_tokens, std::min(max_context, window),
                                     out_f32, out_bf16, stream);
      !st.ok()) {
    return st;
  }
  // After the attention has read the ring: the chunk's last rows replace the oldest entries.
  const int64_t kept = std::min(max_tokens, window);
  if (kept > 0) {
    const dim3 grid(static_cast<unsigned>(num_seqs),
                    static_cast<unsigned>(std::min<int64_t>(kept, 65535)));
    RingWriteKernel<<<grid, 128, 0, stream>>>(k, v, seqs, shape.kv_heads * shape.head_dim,
                                              static_cast<int>(window));
    CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  return absl::OkStatus();
}

}  // namespace jetserve::kernels::cuda
