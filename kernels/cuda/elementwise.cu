// Element-wise and per-row ops (see ops.h). Per-row ops run one block per row with a block
// reduction; element-wise ops are grid-stride loops.
#include "kernels/cuda/common.cuh"

namespace jetserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void EmbeddingGatherKernel(const bf16_t* __restrict__ table, int64_t vocab, int64_t dim,
                                      const int32_t* __restrict__ ids, float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  const bool valid = id >= 0 && id < vocab;
  const bf16_t* row = table + (valid ? static_cast<int64_t>(id) * dim : 0);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[t * dim + i] = valid ? Bf16BitsToFloat(row[i]) : 0.0f;
  }
}

// One block per row; optionally adds delta into x first (written back).
__global__ void RmsNormKernel(float* __restrict__ x, const float* __restrict__ delta,
                              const float* __restrict__ w, int64_t dim, float eps,
                              float* __restrict__ out_f32, bf16_t* __restrict__ out_bf16) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  float* xr = x + r * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i];
    if (delta != nullptr) {
      v += delta[r * dim + i];
      xr[i] = v;
    }
    ss += v * v;
  }
  const float total = BlockSum(ss, scratch);
  const float inv = rsqrtf(total / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    // Each thread reads back only what it wrote above (same i), so no barrier is needed.
    const float y = w[i] * (xr[i] * inv);
    if (out_f32 != nullptr) out_f32[r * dim + i] = y;
    if (out_bf16 != nullptr) out_bf16[r * dim + i] = FloatToBf16Bits(y);
  }
}

__global__ void AddKernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += x[i];
  }
}

// Row-wise element-wise kernels (RowGrid): no thread divides a 64-bit index per element (which
// made SiluMul and AddBias run at ~1.6 TB/s on the H200).
__global__ void AddBiasKernel(float* __restrict__ y, const float* __restrict__ bias, int64_t rows,
                              int cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float* yr = y + r * cols;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
      yr[c] += bias[c];
    }
  }
}

// y = silu(gate) * up per row of gate_up [rows, 2 dim]; kVec4: dim % 4 == 0, four columns a
// thread (16-byte loads, 8-byte bf16 stores).
template <bool kVec4>
__global__ void SiluMulKernel(const float* __restrict__ gate_up, int64_t rows, int dim,
                              float* __restrict__ out_f32, bf16_t* __restrict__ out_bf16) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float* gate = gate_up + r * 2 * dim;
    const float* up = gate + dim;
    if constexpr (kVec4) {
      for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim / 4;
           c += gridDim.x * blockDim.x) {
        const float4 a = reinterpret_cast<const float4*>(gate)[c];
        const float4 b = reinterpret_cast<const float4*>(up)[c];
        const float4 y =
            make_float4(SiluF(a.x) * b.x, SiluF(a.y) * b.y, SiluF(a.z) * b.z, SiluF(a.w) * b.w);
        if (out_f32 != nullptr) reinterpret_cast<float4*>(out_f32 + r * dim)[c] = y;
        if (out_bf16 != nullptr) {
          reinterpret_cast<uint2*>(out_bf16 + r * dim)[c] =
              make_uint2(PackBf16x2(y.x, y.y), PackBf16x2(y.z, y.w));
        }
      }
    } else {
      for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += gridDim.x * blockDim.x) {
        const float y = SiluF(gate[c]) * up[c];
        if (out_f32 != nullptr) out_f32[r * dim + c] = y;
        if (out_bf16 != nullptr) out_bf16[r * dim + c] = FloatToBf16Bits(y);
      }
    }
  }
}

__global__ void SiluKernel(const float* x, int64_t n, float* out_f32, bf16_t* out_bf16) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float y = SiluF(x[i]);
    if (out_bf16 != nullptr) out_bf16[i] = FloatToBf16Bits(y);
    if (out_f32 != nullptr) out_f32[i] = y;  // last: out_f32 may alias x
  }
}

__global__ void CastKernel(const float* __restrict__ x, int64_t n, bf16_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = FloatToBf16Bits(x[i]);
  }
}

// One block per token; threads over (head, i < half). inv_freq computed in double then
// rounded to fp32, angle in fp32, as the CPU Rope (and HF) do.
__global__ void RopeKernel(float* __restrict__ x, const int32_t* __restrict__ positions,
                           int64_t heads, int64_t head_dim, double theta) {
  const int64_t t = blockIdx.x;
  const int64_t half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  for (int64_t e = threadIdx.x; e < heads * half; e += blockDim.x) {
    const int64_t h = e / half, i = e % half;
    const float inv_freq =
        static_cast<float>(1.0 / pow(theta, static_cast<double>(2 * i) / head_dim));
    const float angle = pos * inv_freq;
    float s, c;
    sincosf(angle, &s, &c);
    float* v = x + (t * heads + h) * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

// One warp per (row, head).
__global__ void SiluL2NormKernel(float* __restrict__ x, int64_t n_vectors, int64_t dim, float eps,
                                 float scale) {
  const int64_t warp = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= n_vectors) return;
  float* v = x + warp * dim;
  float ss = 0.0f;
  for (int64_t i = lane; i < dim; i += 32) {
    const float y = SiluF(v[i]);
    v[i] = y;
    ss += y * y;
  }
  ss = WarpSum(ss);
  const float inv = scale * rsqrtf(ss + eps);
  for (int64_t i = lane; i < dim; i += 32) v[i] *= inv;
}

__global__ void JetGatesKernel(float* __restrict__ a, float* __restrict__ b,
                               const float* __restrict__ a_log, const float* __restrict__ dt_bias,
                               int64_t n, int64_t heads) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t h = i % heads;
    const float z = a[i] + dt_bias[h];
    const float softplus = z > 20.0f ? z : log1pf(expf(z));
    a[i] = -expf(a_log[h]) * softplus;
    b[i] = 1.0f / (1.0f + expf(-b[i]));
  }
}

// One warp per (token, head) vector of `dim`.
__global__ void GatedRmsNormKernel(const float* o, const float* __restrict__ gate,
                                   const float* __restrict__ w, int64_t n_vectors, int64_t dim,
                                   float eps, float* out_f32, bf16_t* __restrict__ out_bf16) {
  const int64_t warp = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= n_vectors) return;
  const float* v = o + warp * dim;
  float ss = 0.0f;
  for (int64_t i = lane; i < dim; i += 32) ss += v[i] * v[i];
  ss = WarpSum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  for (int64_t i = lane; i < dim; i += 32) {
    const float y = w[i] * (v[i] * inv) * SiluF(gate[warp * dim + i]);
    if (out_bf16 != nullptr) out_bf16[warp * dim + i] = FloatToBf16Bits(y);
    if (out_f32 != nullptr) out_f32[warp * dim + i] = y;  // may alias o: same element only
  }
}

__global__ void GatherRowsKernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                                 int64_t dim, float* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const float* src = x + static_cast<int64_t>(rows[r]) * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[r * dim + i] = src[i];
}

// Row y of the grid: one (pair, plane) job, striding past the grid's limit; x: the page's
// elements (T: 16-byte vectors where the layout allows, else single bf16 values).
template <typename T>
__global__ void CopyPagesKernel(T* __restrict__ base, int64_t planes, int64_t plane_stride,
                                int64_t page, const int32_t* __restrict__ pairs, int64_t count) {
  const int64_t jobs = count * planes;
  for (int64_t job = blockIdx.y; job < jobs; job += gridDim.y) {
    const int64_t pair = job / planes, plane = job % planes;
    T* plane_base = base + plane * plane_stride;
    const T* src = plane_base + static_cast<int64_t>(pairs[2 * pair]) * page;
    T* dst = plane_base + static_cast<int64_t>(pairs[2 * pair + 1]) * page;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < page;
         i += int64_t{gridDim.x} * blockDim.x) {
      dst[i] = src[i];
    }
  }
}

// Block: a 32 x 32 tile of y (32 tokens x 32 output rows), threads 32 x 8; thread (tx, ty)
// computes y[t0 + ty + 8i, o0 + tx] for i < 4.
__global__ void GemmFallbackKernel(const bf16_t* __restrict__ x, int64_t T,
                                   const bf16_t* __restrict__ w, int64_t O, int64_t K,
                                   float* __restrict__ y) {
  __shared__ float xs[32][33];
  __shared__ float ws[32][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * 32,
                o0 = static_cast<int64_t>(blockIdx.x) * 32;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t k0 = 0; k0 < K; k0 += 32) {
    for (int r = ty; r < 32; r += 8) {
      const int64_t k = k0 + tx;
      xs[r][tx] = (t0 + r < T && k < K) ? Bf16BitsToFloat(x[(t0 + r) * K + k]) : 0.0f;
      ws[r][tx] = (o0 + r < O && k < K) ? Bf16BitsToFloat(w[(o0 + r) * K + k]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < 32; ++kk) {
      const float wv = ws[tx][kk];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] += xs[ty + 8 * i][kk] * wv;
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t t = t0 + ty + 8 * i, o = o0 + tx;
    if (t < T && o < O) y[t * O + o] = acc[i];
  }
}

}  // namespace

absl::Status GemmBf16Fallback(const bf16_t* x, int64_t tokens, const bf16_t* w, int64_t rows,
                              int64_t cols, float* y, cudaStream_t stream) {
  if (tokens < 0 || rows < 1 || cols < 1 || CeilDiv(tokens, 32) > 65535) {
    return ShapeError("GemmBf16Fallback", "bad shape");
  }
  if (tokens == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>(CeilDiv(rows, 32)),
                  static_cast<unsigned>(CeilDiv(tokens, 32)));
  GemmFallbackKernel<<<grid, dim3(32, 8), 0, stream>>>(x, tokens, w, rows, cols, y);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status EmbeddingGather(const bf16_t* table, int64_t vocab, int64_t dim, const int32_t* ids,
                             int64_t tokens, float* out, cudaStream_t stream) {
  if (vocab < 1 || dim < 1 || tokens < 0) return ShapeError("EmbeddingGather", "bad shape");
  if (tokens == 0) return absl::OkStatus();
  EmbeddingGatherKernel<<<tokens, kThreads, 0, stream>>>(table, vocab, dim, ids, out);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status RmsNorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps,
                     float* out_f32, bf16_t* out_bf16, cudaStream_t stream) {
  if (rows < 0 || dim < 1) return ShapeError("RmsNorm", "bad shape");
  if (rows == 0) return absl::OkStatus();
  // x is only read when delta is null.
  RmsNormKernel<<<rows, kThreads, 0, stream>>>(const_cast<float*>(x), nullptr, w, dim, eps, out_f32,
                                               out_bf16);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status AddRmsNorm(float* residual, const float* delta, const float* w, int64_t rows,
                        int64_t dim, float eps, float* out_f32, bf16_t* out_bf16,
                        cudaStream_t stream) {
  if (rows < 0 || dim < 1) return ShapeError("AddRmsNorm", "bad shape");
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<<<rows, kThreads, 0, stream>>>(residual, delta, w, dim, eps, out_f32, out_bf16);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status AddInPlace(float* residual, const float* delta, int64_t n, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  AddKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(residual, delta, n);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status AddBias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows < 0 || cols < 1 || cols > (int64_t{1} << 30)) return ShapeError("AddBias", "bad shape");
  if (rows == 0 || bias == nullptr) return absl::OkStatus();
  AddBiasKernel<<<RowGrid(rows, cols, kThreads), kThreads, 0, stream>>>(y, bias, rows,
                                                                        static_cast<int>(cols));
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status SiluMul(const float* gate_up, int64_t rows, int64_t dim, float* out_f32,
                     bf16_t* out_bf16, cudaStream_t stream) {
  if (rows < 0 || dim < 1 || dim > (int64_t{1} << 29)) return ShapeError("SiluMul", "bad shape");
  if (rows == 0) return absl::OkStatus();
  const int d = static_cast<int>(dim);
  if (dim % 4 == 0) {
    SiluMulKernel<true><<<RowGrid(rows, dim / 4, kThreads), kThreads, 0, stream>>>(
        gate_up, rows, d, out_f32, out_bf16);
  } else {
    SiluMulKernel<false><<<RowGrid(rows, dim, kThreads), kThreads, 0, stream>>>(gate_up, rows, d,
                                                                                out_f32, out_bf16);
  }
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status Silu(const float* x, int64_t n, float* out_f32, bf16_t* out_bf16,
                  cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  SiluKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(x, n, out_f32, out_bf16);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status CastToBf16(const float* x, int64_t n, bf16_t* out, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  CastKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(x, n, out);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status Rope(float* x, const int32_t* positions, int64_t tokens, int64_t heads,
                  int64_t head_dim, double theta, cudaStream_t stream) {
  if (tokens < 0 || heads < 1 || head_dim < 2 || head_dim % 2 != 0) {
    return ShapeError("Rope", "needs an even head_dim >= 2");
  }
  if (tokens == 0) return absl::OkStatus();
  RopeKernel<<<tokens, 128, 0, stream>>>(x, positions, heads, head_dim, theta);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status SiluL2NormHeads(float* x, int64_t rows, int64_t heads, int64_t dim, float eps,
                             float scale, cudaStream_t stream) {
  if (rows < 0 || heads < 1 || dim < 1) return ShapeError("SiluL2NormHeads", "bad shape");
  const int64_t n = rows * heads;
  if (n == 0) return absl::OkStatus();
  SiluL2NormKernel<<<CeilDiv(n * 32, kThreads), kThreads, 0, stream>>>(x, n, dim, eps, scale);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status JetGates(float* a, float* b, const float* a_log, const float* dt_bias, int64_t tokens,
                      int64_t heads, cudaStream_t stream) {
  if (tokens < 0 || heads < 1) return ShapeError("JetGates", "bad shape");
  if (tokens == 0) return absl::OkStatus();
  JetGatesKernel<<<GridFor(tokens * heads, kThreads), kThreads, 0, stream>>>(a, b, a_log, dt_bias,
                                                                             tokens * heads, heads);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status GatedRmsNorm(const float* o, const float* gate, const float* w, int64_t tokens,
                          int64_t heads, int64_t dim, float eps, float* out_f32, bf16_t* out_bf16,
                          cudaStream_t stream) {
  if (tokens < 0 || heads < 1 || dim < 1) return ShapeError("GatedRmsNorm", "bad shape");
  const int64_t n = tokens * heads;
  if (n == 0) return absl::OkStatus();
  GatedRmsNormKernel<<<CeilDiv(n * 32, kThreads), kThreads, 0, stream>>>(o, gate, w, n, dim, eps,
                                                                         out_f32, out_bf16);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status GatherRows(const float* x, const int32_t* rows, int64_t n, int64_t dim, float* out,
                        cudaStream_t stream) {
  if (n < 0 || dim < 1) return ShapeError("GatherRows", "bad shape");
  if (n == 0) return absl::OkStatus();
  GatherRowsKernel<<<n, kThreads, 0, stream>>>(x, rows, dim, out);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

// Rows over blockIdx.y, columns over x (RowGrid).
__global__ void SplitColumnsKernel(const float* __restrict__ src, int64_t rows, int width,
                                   ColumnSplitDev parts) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < width;
         col += gridDim.x * blockDim.x) {
      int64_t c = col;
      int i = 0;
      while (i + 1 < parts.count && c >= parts.widths[i]) c -= parts.widths[i++];
      parts.dst[i][r * parts.widths[i] + c] = src[r * width + col];
    }
  }
}

absl::Status SplitColumns(const float* src, int64_t rows, int64_t width,
                          const ColumnSplitDev& parts, cudaStream_t stream) {
  int64_t sum = 0;
  for (int i = 0; i < parts.count && i < ColumnSplitDev::kMaxParts; ++i) sum += parts.widths[i];
  if (rows < 0 || parts.count < 1 || parts.count > ColumnSplitDev::kMaxParts || sum != width) {
    return ShapeError("SplitColumns",
                      absl::StrCat(parts.count, " parts of ", sum, " columns for ", width));
  }
  if (rows == 0) return absl::OkStatus();
  if (width > (int64_t{1} << 30)) return ShapeError("SplitColumns", "too wide");
  SplitColumnsKernel<<<RowGrid(rows, width, kThreads), kThreads, 0, stream>>>(
      src, rows, static_cast<int>(width), parts);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

__global__ void ScatterInt32Kernel(const int32_t* __restrict__ pairs, int64_t count,
                                   int32_t* __restrict__ dst, int64_t dst_size) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t at = pairs[2 * i];
    if (at >= 0 && at < dst_size) dst[at] = pairs[2 * i + 1];  // out of range: dropped
  }
}

absl::Status ScatterInt32(const int32_t* pairs, int64_t count, int32_t* dst, int64_t dst_size,
                          cudaStream_t stream) {
  if (count < 0 || dst_size < 0) return ShapeError("ScatterInt32", "bad shape");
  if (count == 0) return absl::OkStatus();
  ScatterInt32Kernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(pairs, count, dst,
                                                                        dst_size);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status CopyPages(bf16_t* base, int64_t planes, int64_t plane_stride, int64_t page,
                       const int32_t* pairs, int64_t count, cudaStream_t stream) {
  if (planes < 0 || plane_stride < 0 || page < 0 || count < 0 || page > plane_stride) {
    return ShapeError(
        "CopyPages", absl::StrCat(planes, " planes of ", plane_stride, " elements, pages of ", page,
                                  ", ", count, " pairs"));
  }
  if (planes == 0 || page == 0 || count == 0) return absl::OkStatus();
  const int64_t jobs = count * planes;
  // 16-byte copies when every page starts on a 16-byte boundary (cudaMalloc aligns the base).
  constexpr int64_t kVec = sizeof(uint4) / sizeof(bf16_t);
  if (reinterpret_cast<uintptr_t>(base) % sizeof(uint4) == 0 && page % kVec == 0 &&
      plane_stride % kVec == 0) {
    CopyPagesKernel<uint4><<<RowGrid(jobs, page / kVec, kThreads), kThreads, 0, stream>>>(
        reinterpret_cast<uint4*>(base), planes, plane_stride / kVec, page / kVec, pairs, count);
  } else {
    CopyPagesKernel<bf16_t><<<RowGrid(jobs, page, kThreads), kThreads, 0, stream>>>(
        base, planes, plane_stride, page, pairs, count);
  }
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace jetserve::kernels::cuda
