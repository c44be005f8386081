// The decode attention kernel on CUDA cores: one query token per sequence (see
// attention_internal.cuh for how attention.cu calls it), and the choice between the decode
// kernels. Off by default until they have run on a GPU (ops.h, SetDecodeAttentionKernel).
#include <atomic>
#include <cstdlib>
#include <string>

#include "kernels/cuda/attention_internal.cuh"

namespace jetserve::kernels::cuda {
namespace attention_internal {
namespace {

// ---- Decode: one query token per sequence ----
//
// AttnKernel stages K and V through shared memory as fp32 and reads them back once per query
// row, which bounds it by shared-memory traffic (~12% of the H200's bandwidth on 2B decode at 64K,
// measured). DecodeAttnKernel keeps everything but the scores in registers. Block (sequence, kv
// head, split), 4 warps; its keys [k0, k1) (at most kDecodeChunk) go in two passes:
//   1. scores: LPK lanes share a key, each holding D = HD / LPK of its dims (16-byte pieces,
//      interleaved so that one load instruction reads whole 32-byte sectors) and the same dims of
//      the G query heads' q in registers; the dot products reduce over the LPK lanes by shuffles
//      and land in shared memory [G][keys];
//   2. the block's max and sum per head turn the scores into probabilities in place, then each
//      lane accumulates p * v over its keys for its dims, and the lanes, then the warps, add up.
// K and V are each read once; the partial (acc, m, l) goes to the same workspace as AttnKernel's.
constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * 32;
constexpr int kDecodeUnroll = 4;  // key loads in flight per lane

// This lane's 16-byte pieces of the keys (or values) it handles in one round of kDecodeUnroll
// iterations from `base`: key i = base + (u * warps + warp) * (32 / LPK) + lane / LPK of the
// split starting at k0, pieces c * LPK + lane % LPK; zeros past the split's n keys.
template <int C, int LPK, bool kWindow>
__device__ __forceinline__ void LoadKeyGroup(const Params& p, const AttnSeqDev& s,
                                             const bf16_t* pages, const bf16_t* ring,
                                             const float* fresh, int kvh, int k0, int n, int base,
                                             int warp, int lane, uint4 (&out)[kDecodeUnroll][C]) {
  const int grp = lane / LPK, sub = lane % LPK;
#pragma unroll
  for (int u = 0; u < kDecodeUnroll; ++u) {
    const int i = base + (u * kDecodeWarps + warp) * (32 / LPK) + grp;
    const unsigned long long row =
        i < n ? KvRowAddress<kWindow>(p, s, pages, ring, fresh, kvh, k0 + i) : 0;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      out[u][c] = i < n ? LoadKvRow16<kWindow>(row, (c * LPK + sub) * 8) : make_uint4(0, 0, 0, 0);
    }
  }
}

template <int G, int HD, int LPK, bool kWindow>
__global__ void __launch_bounds__(kDecodeThreads) DecodeAttnKernel(Params p) {
  constexpr int D = HD / LPK;    // dims per lane
  constexpr int C = D / 8;       // 16-byte pieces per lane
  constexpr int KPW = 32 / LPK;  // keys per warp and iteration
  constexpr int kStride = kDecodeWarps * KPW;
  static_assert(D % 8 == 0 && 32 % LPK == 0, "lanes per key must split the head into 8s");
  static_assert(kDecodeChunk >= kDecodeWarps * HD, "the final reduction reuses the score buffer");
  extern __shared__ float smem[];
  float* sc = smem;  // [G][kDecodeChunk]: scores, then probabilities; at the end [warps][G][HD]
  __shared__ float red[kDecodeWarps][G];
  const AttnSeqDev s = p.seqs[blockIdx.x];
  if (s.num_tokens < 1) return;  // whole block
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int grp = lane / LPK, sub = lane % LPK;
  const auto [k0, n] = DecodeSplitOf<kWindow>(p, s, split);
  const int64_t token = s.token_offset;

  // Pass 1: scores.
  {
    float qr[G][D];
    const float* qb = p.q + (token * p.q_heads + static_cast<int64_t>(kvh) * G) * HD;
#pragma unroll
    for (int h = 0; h < G; ++h) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const float4* src = reinterpret_cast<const float4*>(qb + h * HD + (c * LPK + sub) * 8);
        const float4 a = src[0], b = src[1];
        const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
        for (int e = 0; e < 8; ++e) qr[h][c * 8 + e] = v[e] * p.scale;
      }
    }
    for (int base = 0; base < n; base += kStride * kDecodeUnroll) {
      uint4 kr[kDecodeUnroll][C];
      LoadKeyGroup<C, LPK, kWindow>(p, s, p.k_pages, s.k_ring, p.k, kvh, k0, n, base, warp, lane,
                                    kr);
#pragma unroll
      for (int u = 0; u < kDecodeUnroll; ++u) {
        const int i = base + (u * kDecodeWarps + warp) * KPW + grp;
        float dot[G];
#pragma unroll
        for (int h = 0; h < G; ++h) dot[h] = 0.0f;
#pragma unroll
        for (int c = 0; c < C; ++c) {
          float f[8];
          Bf16x8BitsToFloat(kr[u][c], f);
#pragma unroll
          for (int h = 0; h < G; ++h) {
#pragma unroll
            for (int e = 0; e < 8; ++e) dot[h] = fmaf(qr[h][c * 8 + e], f[e], dot[h]);
          }
        }
#pragma unroll
        for (int h = 0; h < G; ++h) {
#pragma unroll
          for (int o = LPK / 2; o > 0; o >>= 1) dot[h] += __shfl_xor_sync(0xffffffffu, dot[h], o);
        }
        if (sub == 0 && i < n) {
#pragma unroll
          for (int h = 0; h < G; ++h) sc[h * kDecodeChunk + i] = dot[h];
        }
      }
    }
  }
  __syncthreads();

  // Softmax over the block's keys, per head (all threads hold the same m and l).
  float m[G], l[G];
  BlockHeadMax<G, kDecodeWarps>(sc, kDecodeChunk, n, red, m);
  {
    float sum[G];
#pragma unroll
    for (int h = 0; h < G; ++h) {
      sum[h] = 0.0f;
      for (int i = threadIdx.x; i < n; i += kDecodeThreads) {
        const float e = expf(sc[h * kDecodeChunk + i] - m[h]);
        sc[h * kDecodeChunk + i] = e;
        sum[h] += e;
      }
    }
    BlockHeadSum<G, kDecodeWarps>(sum, red, l);
  }

  // Pass 2: p * v.
  float acc[G][D];
#pragma unroll
  for (int h = 0; h < G; ++h) {
#pragma unroll
    for (int d = 0; d < D; ++d) acc[h][d] = 0.0f;
  }
  for (int base = 0; base < n; base += kStride * kDecodeUnroll) {
    uint4 vr[kDecodeUnroll][C];
    LoadKeyGroup<C, LPK, kWindow>(p, s, p.v_pages, s.v_ring, p.v, kvh, k0, n, base, warp, lane, vr);
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      const int i = base + (u * kDecodeWarps + warp) * KPW + grp;
      if (i >= n) continue;  // its vr are zeros; no shuffles below
      float pr[G];
#pragma unroll
      for (int h = 0; h < G; ++h) pr[h] = sc[h * kDecodeChunk + i];
#pragma unroll
      for (int c = 0; c < C; ++c) {
        float f[8];
        Bf16x8BitsToFloat(vr[u][c], f);
#pragma unroll
        for (int h = 0; h < G; ++h) {
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[h][c * 8 + e] = fmaf(pr[h], f[e], acc[h][c * 8 + e]);
        }
      }
    }
  }
  // The KPW key groups of a warp, then the warps (through the score buffer, free now).
#pragma unroll
  for (int o = LPK; o < 32; o <<= 1) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
#pragma unroll
      for (int d = 0; d < D; ++d) acc[h][d] += __shfl_xor_sync(0xffffffffu, acc[h][d], o);
    }
  }
  __syncthreads();     // every thread is done with the probabilities
  float* part = smem;  // [warps][G][HD]
  if (grp == 0) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          part[(warp * G + h) * HD + (c * LPK + sub) * 8 + e] = acc[h][c * 8 + e];
        }
      }
    }
  }
  __syncthreads();
  WriteDecodePartial<G, HD, kDecodeWarps>(p, part, G, token, kvh, split, n, m, l);
}

// The decode kernel for a (group, head_dim), or null where it has no instantiation.
template <bool kWindow>
using DecodeKernelFn = void (*)(Params);

template <bool kWindow>
DecodeKernelFn<kWindow> DecodeKernelFor(int group, int hd) {
  // LPK: 8 lanes per key while the G * D query values and accumulators fit in registers
  // (G * D <= 96), else 16.
#define JETSERVE_DECODE_CASE(G, HD)                             \
  if (group == (G) && hd == (HD)) {                             \
    constexpr int kLanesPerKey = (G) * (HD) / 8 <= 96 ? 8 : 16; \
    return DecodeAttnKernel<G, HD, kLanesPerKey, kWindow>;      \
  }
  // Each case is two kernels (paged, window) for two architectures, ~3 s of nvcc each: only
  // the shapes that run. Jet-Nemotron 2B (12 q heads on 2 kv heads, head_dim 128) and 4B (16 on
  // 2); the GPU tests' group 3 and group 1 at head_dim 64. Another model's shape needs a line
  // here (it runs on the generic kernel until then).
  JETSERVE_DECODE_CASE(6, 128)
  JETSERVE_DECODE_CASE(8, 128)
  JETSERVE_DECODE_CASE(3, 64)
  JETSERVE_DECODE_CASE(1, 64)
#undef JETSERVE_DECODE_CASE
  return nullptr;
}

// Off until measured on a GPU (written in sessions without one): JETSERVE_CUDA_ATTN=decode
// (CUDA cores) or decode_tc (tensor cores) turns one on, SetDecodeAttentionKernel overrides both.
// -1: the environment's choice, else a DecodeAttention value.
std::atomic<int> decode_kernel_override{-1};

DecodeAttention DecodeKernelChosen() {
  const int o = decode_kernel_override.load(std::memory_order_relaxed);
  if (o >= 0) return static_cast<DecodeAttention>(o);
  static const DecodeAttention from_env = [] {
    const char* e = std::getenv("JETSERVE_CUDA_ATTN");
    const std::string v = e == nullptr ? "" : e;
    return v == "decode"      ? DecodeAttention::kCudaCores
           : v == "decode_tc" ? DecodeAttention::kTensorCores
                              : DecodeAttention::kGeneric;
  }();
  return from_env;
}

}  // namespace

absl::StatusOr<bool> LaunchDecodeAttention(const Params& p, bool window, int64_t num_seqs,
                                           int64_t max_keys, cudaStream_t stream) {
  const DecodeAttention chosen = DecodeKernelChosen();
  if (chosen == DecodeAttention::kGeneric || CeilDiv(max_keys, p.splits) > kDecodeChunk ||
      num_seqs > (int64_t{1} << 31) - 1 || num_seqs < 1) {
    return false;
  }
  if (chosen == DecodeAttention::kTensorCores) {
    return LaunchDecodeAttentionTc(p, window, num_seqs, stream);
  }
  void (*kernel)(Params) =
      window ? DecodeKernelFor<true>(p.group, p.hd) : DecodeKernelFor<false>(p.group, p.hd);
  if (kernel == nullptr) return false;
  const dim3 grid(static_cast<unsigned>(num_seqs), static_cast<unsigned>(p.kv_heads),
                  static_cast<unsigned>(p.splits));
  kernel<<<grid, kDecodeThreads, sizeof(float) * p.group * kDecodeChunk, stream>>>(p);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return true;
}

}  // namespace attention_internal

void SetDecodeAttentionKernel(std::optional<DecodeAttention> kernel) {
  attention_internal::decode_kernel_override.store(
      kernel.has_value() ? static_cast<int>(*kernel) : -1, std::memory_order_relaxed);
}

}  // namespace jetserve::kernels::cuda
