// The decode attention kernel on tensor cores (DecodeAttention::kTensorCores,
// JETSERVE_CUDA_ATTN=decode_tc): one query token per sequence, the group's query heads as the
// rows of bf16 wmma tiles. Off by default until it has run on a GPU (ops.h).
#include <mma.h>

#include "kernels/cuda/attention_internal.cuh"

namespace jetserve::kernels::cuda {
namespace attention_internal {
namespace {

namespace wmma = nvcuda::wmma;

// Why a second decode kernel: DecodeAttnKernel does a split's Q·Kᵀ and P·V as fp32 FMAs, 2 × G ×
// head_dim per key (1,536 for 2B) against 512 bytes of K and V: at the ~3.5 TB/s the 64K target
// needs, ~10 T FMA/s plus the bf16 unpacking, close to the H200's fp32 rate, so it may end up
// bound by instruction issue rather than memory. Here a split's keys go 16 at a time through
// 16 × 16 × 16 bf16 tiles whose 16 rows are the group's G query heads (zeros below), as
// FlashInfer does for grouped-query decode:
//   1. scores: each warp stages its 16-key tiles of K in shared memory (16-byte loads, two tiles
//      per round in flight) and multiplies them by the group's q (bf16, scale applied), held in
//      registers as head_dim / 16 fragments; the G live rows of each 16 × 16 result go to the
//      fp32 score buffer [G][keys];
//   2. the block's max per head, exp, the sum, and the probabilities as bf16 [16][keys] (rows
//      past G unused, columns past the split's keys up to the last tile's end zero);
//   3. P·V: each warp stages its tiles of V and accumulates P[:, tile] · V[tile, :] into
//      head_dim / 16 fp32 fragments; the warps' results add up through shared memory.
// Numerics: q·scale and p rounded to bf16 (flash-attention's choice), every product summed in
// fp32; l is the sum of the rounded p, so the output is an exact convex combination of the
// bf16 values. The partial (acc, m, l) goes to the same workspace as the other kernels'.
constexpr int kTcWarps = 4;
constexpr int kTcThreads = kTcWarps * 32;
constexpr int kKeyTile = 16;  // keys per wmma tile
constexpr int kTilesInFlight = 2;

using FragRows = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragKt = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragV = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Shared memory, byte offsets. Every region starts on 32 bytes (wmma's pointers); bf16 rows
// are padded by 8 elements (16 bytes), so the eight 16-byte rows a fragment load reads at once
// fall in different banks. Regions whose lifetimes do not overlap share bytes, which at the 2B
// shape (G 6, head_dim 128) brings a block to 74 KB: three blocks (12 warps) per H200 SM.
//   stage   [warps][kTilesInFlight][16][kLdKv] bf16: K, then V tiles. Before pass 1 it holds q
//           [16][kLdKv] (every warp has its fragments before any warp stages), after pass 2 the
//           warps' results [warps][16][HD] fp32.
//   probs   [16][kLdP] bf16: rows 0 .. G-1 written by the softmax, read by pass 2. Rows G .. 15
//           are read by pass 2's fragment loads but reach only result rows that are never read,
//           so they may hold anything: they lie over the scores, dead by then.
//   scores  [G][kDecodeChunk] fp32, from pass 1 to the softmax.
//   scratch [warps][16][16] fp32, pass 1's tile results.
template <int G, int HD>
struct TcLayout {
  static constexpr int kLdKv = HD + 8;           // bf16 row stride of q and the staged tiles
  static constexpr int kLdP = kDecodeChunk + 8;  // bf16 row stride of the probabilities
  static constexpr int kTileElems = kKeyTile * kLdKv;
  static constexpr int kStage = 0;
  static constexpr int kQ = kStage;
  static constexpr int kProbs = kStage + 2 * kTcWarps * kTilesInFlight * kTileElems;
  static constexpr int Round32(int bytes) { return (bytes + 31) / 32 * 32; }
  static constexpr int kScores = Round32(kProbs + 2 * G * kLdP);
  static constexpr int kScratch =
      Round32(std::max(kScores + 4 * G * kDecodeChunk, kProbs + 2 * 16 * kLdP));
  static constexpr int kBytes = kScratch + 4 * kTcWarps * 256;
  static_assert(2 * kTileElems <= kProbs, "q must fit the staging tiles");
  static_assert(4 * kTcWarps * 16 * HD <= kProbs, "the results must fit the staging tiles");
  static_assert(kProbs % 32 == 0 && kScores % 32 == 0 && (2 * kTileElems) % 32 == 0);
};

// Blocks per SM the kernel is built for (__launch_bounds__): three where 3 × (shared + the 1 KB
// the system reserves per block) fits an H200 SM's 228 KB, else two.
// Static shared memory: the kernel's `red` [kTcWarps][G], which ptxas rounds up to 128 bytes.
template <int G>
constexpr int TcStaticShared() {
  return (4 * kTcWarps * G + 127) / 128 * 128;
}
template <int G, int HD>
constexpr int TcMinBlocks() {
  return 3 * (TcLayout<G, HD>::kBytes + TcStaticShared<G>() + 1024) <= 228 * 1024 ? 3 : 2;
}

// Stages this warp's tiles t0 + u * kTcWarps (u < kTilesInFlight) of K (or V) rows, keys i of
// the split at k0, into `stage` [kTilesInFlight][16][kLdKv]: lane l takes the 16-byte pieces
// l, l + 32, … of a tile (piece q: key row q / (HD / 8), dims (q % (HD / 8)) * 8 …), zeros for
// keys at or past n. Each key's row address is found once, by lane 16 u + row (its block-table
// lookup and divisions), and shuffled to the lanes that load the row's pieces. All loads are
// issued before the first store.
template <int HD, int kLdKv, bool kWindow>
__device__ __forceinline__ void StageTiles(const Params& p, const AttnSeqDev& s,
                                           const bf16_t* pages, const bf16_t* ring,
                                           const float* fresh, int kvh, int k0, int n, int t0,
                                           int lane, bf16_t* stage) {
  constexpr int kPieces = HD / 8;
  constexpr int kPerLane = kKeyTile * kPieces / 32;
  static_assert(kKeyTile * kPieces % 32 == 0, "a tile's pieces must split over the lanes");
  static_assert(kTilesInFlight * kKeyTile == 32, "one lane finds each staged key's row");
  const int mine = (t0 + (lane / kKeyTile) * kTcWarps) * kKeyTile + lane % kKeyTile;
  const unsigned long long my_row =
      mine < n ? KvRowAddress<kWindow>(p, s, pages, ring, fresh, kvh, k0 + mine) : 0;
  uint4 r[kTilesInFlight][kPerLane];
#pragma unroll
  for (int u = 0; u < kTilesInFlight; ++u) {
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int piece = lane + 32 * j;
      const int i = (t0 + u * kTcWarps) * kKeyTile + piece / kPieces;
      const unsigned long long row =
          __shfl_sync(0xffffffffu, my_row, u * kKeyTile + piece / kPieces);
      r[u][j] = i < n ? LoadKvRow16<kWindow>(row, (piece % kPieces) * 8) : make_uint4(0, 0, 0, 0);
    }
  }
  __syncwarp();  // every lane is done reading the previous round's tiles
#pragma unroll
  for (int u = 0; u < kTilesInFlight; ++u) {
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int piece = lane + 32 * j;
      *reinterpret_cast<uint4*>(stage + (u * kKeyTile + piece / kPieces) * kLdKv +
                                (piece % kPieces) * 8) = r[u][j];
    }
  }
  __syncwarp();
}

template <int G, int HD, bool kWindow>
__global__ void __launch_bounds__(kTcThreads, (TcMinBlocks<G, HD>())) DecodeAttnTcKernel(Params p) {
  using L = TcLayout<G, HD>;
  static_assert(HD % 16 == 0 && G >= 1 && G <= 16, "q heads of a group must fit one tile's rows");
  constexpr int kFrags = HD / 16;
  constexpr int kRound = kTcWarps * kTilesInFlight;  // tiles per round of the block
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ float red[kTcWarps][G];
  const AttnSeqDev s = p.seqs[blockIdx.x];
  if (s.num_tokens < 1) return;  // whole block
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const auto [k0, n] = DecodeSplitOf<kWindow>(p, s, split);
  const int tiles = (n + kKeyTile - 1) / kKeyTile;
  const int64_t token = s.token_offset;

  // Regions: see TcLayout.
  bf16_t* qs = reinterpret_cast<bf16_t*>(smem + L::kQ);  // [16][kLdKv]
  bf16_t* stage =
      reinterpret_cast<bf16_t*>(smem + L::kStage) + warp * kTilesInFlight * L::kTileElems;
  float* scratch = reinterpret_cast<float*>(smem + L::kScratch) + warp * 256;  // [16][16]
  float* sc = reinterpret_cast<float*>(smem + L::kScores);                     // [G][chunk]
  bf16_t* pb = reinterpret_cast<bf16_t*>(smem + L::kProbs);                    // [16][kLdP]

  // q·scale as bf16 in rows 0 .. G-1, zeros below.
  const float* qb = p.q + (token * p.q_heads + static_cast<int64_t>(kvh) * G) * HD;
  for (int e = threadIdx.x; e < 16 * HD; e += kTcThreads) {
    const int r = e / HD, d = e % HD;
    qs[r * L::kLdKv + d] = r < G ? FloatToBf16Bits(qb[r * HD + d] * p.scale) : bf16_t{0};
  }
  __syncthreads();

  // Pass 1: scores.
  {
    FragRows qf[kFrags];
#pragma unroll
    for (int j = 0; j < kFrags; ++j) {
      wmma::load_matrix_sync(qf[j], reinterpret_cast<const __nv_bfloat16*>(qs) + j * 16, L::kLdKv);
    }
    __syncthreads();  // q lies in the staging tiles: every warp has its fragments
    for (int t0 = warp; t0 < tiles; t0 += kRound) {
      StageTiles<HD, L::kLdKv, kWindow>(p, s, p.k_pages, s.k_ring, p.k, kvh, k0, n, t0, lane,
                                        stage);
#pragma unroll
      for (int u = 0; u < kTilesInFlight; ++u) {
        const int tile = t0 + u * kTcWarps;
        if (tile >= tiles) break;  // the same for the whole warp
        FragAcc acc;
        wmma::fill_fragment(acc, 0.0f);
        const __nv_bfloat16* kt = reinterpret_cast<const __nv_bfloat16*>(stage) + u * L::kTileElems;
#pragma unroll
        for (int j = 0; j < kFrags; ++j) {
          FragKt kf;  // element (dim, key) at kt[key * kLdKv + dim]: K's rows as Kᵀ's columns
          wmma::load_matrix_sync(kf, kt + j * 16, L::kLdKv);
          wmma::mma_sync(acc, qf[j], kf, acc);
        }
        wmma::store_matrix_sync(scratch, acc, 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < G * kKeyTile; e += 32) {
          const int i = tile * kKeyTile + e % kKeyTile;
          if (i < n) sc[(e / kKeyTile) * kDecodeChunk + i] = scratch[e];
        }
        __syncwarp();  // scratch is rewritten by the next tile
      }
    }
  }
  __syncthreads();

  // Softmax over the block's keys, per head (all threads hold the same m and l): max, then
  // p = exp(s - m) rounded to bf16 into the probabilities, zeros up to the last tile's end, and
  // l the sum of the rounded p.
  float m[G], l[G];
  BlockHeadMax<G, kTcWarps>(sc, kDecodeChunk, n, red, m);
  {
    float sum[G];
#pragma unroll
    for (int h = 0; h < G; ++h) {
      sum[h] = 0.0f;
      for (int i = threadIdx.x; i < tiles * kKeyTile; i += kTcThreads) {
        bf16_t e = 0;
        if (i < n) {
          e = FloatToBf16Bits(expf(sc[h * kDecodeChunk + i] - m[h]));
          sum[h] += Bf16BitsToFloat(e);
        }
        pb[h * L::kLdP + i] = e;
      }
    }
    BlockHeadSum<G, kTcWarps>(sum, red, l);
  }

  // Pass 2: P·V.
  FragAcc acc[kFrags];
#pragma unroll
  for (int j = 0; j < kFrags; ++j) wmma::fill_fragment(acc[j], 0.0f);
  for (int t0 = warp; t0 < tiles; t0 += kRound) {
    StageTiles<HD, L::kLdKv, kWindow>(p, s, p.v_pages, s.v_ring, p.v, kvh, k0, n, t0, lane, stage);
#pragma unroll
    for (int u = 0; u < kTilesInFlight; ++u) {
      const int tile = t0 + u * kTcWarps;
      if (tile >= tiles) break;
      FragRows pf;  // element (head, key) at pb[head * kLdP + tile * 16 + key]
      wmma::load_matrix_sync(pf, reinterpret_cast<const __nv_bfloat16*>(pb) + tile * kKeyTile,
                             L::kLdP);
      const __nv_bfloat16* vt = reinterpret_cast<const __nv_bfloat16*>(stage) + u * L::kTileElems;
#pragma unroll
      for (int j = 0; j < kFrags; ++j) {
        FragV vf;  // element (key, dim) at vt[key * kLdKv + j * 16 + dim]
        wmma::load_matrix_sync(vf, vt + j * 16, L::kLdKv);
        wmma::mma_sync(acc[j], pf, vf, acc[j]);
      }
    }
  }
  __syncthreads();  // every warp is done with the staging tiles, which the results reuse
  float* part = reinterpret_cast<float*>(smem + L::kStage);  // [warps][16][HD]
#pragma unroll
  for (int j = 0; j < kFrags; ++j) {
    wmma::store_matrix_sync(part + warp * 16 * HD + j * 16, acc[j], HD, wmma::mem_row_major);
  }
  __syncthreads();
  WriteDecodePartial<G, HD, kTcWarps>(p, part, 16, token, kvh, split, n, m, l);
}

// The most shared memory a block may opt in to on the current device (sm_80: 163 KB, sm_86 /
// sm_89: 99 KB, sm_90: 227 KB), or 0 if it cannot be read.
size_t MaxSharedPerBlock() {
  static const size_t bytes = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
      return size_t{0};
    }
    return static_cast<size_t>(v);
  }();
  return bytes;
}

template <int G, int HD, bool kWindow>
absl::StatusOr<bool> LaunchTc(const Params& p, int64_t num_seqs, cudaStream_t stream) {
  constexpr size_t kShared = TcLayout<G, HD>::kBytes;
  // A device that cannot give a block that much (shapes past 99 KB on sm_86 / sm_89) runs the
  // generic kernel instead.
  if (kShared + TcStaticShared<G>() > MaxSharedPerBlock()) return false;
  static size_t configured = 0;  // per kernel (template instance)
  if (configured == 0) {
    // The most shared memory per SM (228 KB on an H200), so that three blocks fit, not the
    // driver's default split with L1.
    CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(DecodeAttnTcKernel<G, HD, kWindow>,
                                              cudaFuncAttributePreferredSharedMemoryCarveout,
                                              cudaSharedmemCarveoutMaxShared));
  }
  if (absl::Status s = AllowDynamicShared(DecodeAttnTcKernel<G, HD, kWindow>, kShared, &configured);
      !s.ok()) {
    return s;
  }
  const dim3 grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(p.kv_heads),
                  static_cast<unsigned>(p.splits));
  DecodeAttnTcKernel<G, HD, kWindow><<<grid, kTcThreads, kShared, stream>>>(p);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return true;
}

}  // namespace

absl::StatusOr<bool> LaunchDecodeAttentionTc(const Params& p, bool window, int64_t num_seqs,
                                             cudaStream_t stream) {
  // The shapes that run, as for DecodeAttnKernel: 2B (group 6, head_dim 128), 4B (8, 128) and
  // the GPU tests' (3, 64) and (1, 64). Another model's shape needs a line here.
#define JETSERVE_DECODE_TC_CASE(G, HD)                           \
  if (p.group == (G) && p.hd == (HD)) {                          \
    return window ? LaunchTc<G, HD, true>(p, num_seqs, stream)   \
                  : LaunchTc<G, HD, false>(p, num_seqs, stream); \
  }
  JETSERVE_DECODE_TC_CASE(6, 128)
  JETSERVE_DECODE_TC_CASE(8, 128)
  JETSERVE_DECODE_TC_CASE(3, 64)
  JETSERVE_DECODE_TC_CASE(1, 64)
#undef JETSERVE_DECODE_TC_CASE
  return false;
}

}  // namespace attention_internal
}  // namespace jetserve::kernels::cuda
