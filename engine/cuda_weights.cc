#include "engine/cuda_weights.h"

#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/dtype.h"

namespace jetserve {

using kernels::cuda::bf16_t;

absl::StatusOr<DeviceMatrix> CudaWeights::UploadMatrix(
    std::initializer_list<const TensorView*> parts) {
  DeviceMatrix m;
  for (const TensorView* t : parts) {
    if (!t->present()) return m;  // absent tensor: no matrix
    const int64_t cols = t->shape.size() > 1 ? t->shape[1] : 1;
    if (m.cols != 0 && m.cols != cols) return absl::InternalError("fused parts differ in cols");
    m.cols = cols;
    m.rows += t->shape[0];
  }
  std::vector<bf16_t> host(m.rows * m.cols);
  int64_t at = 0;
  for (const TensorView* t : parts) {
    const int64_t n = t->numel();
    if (t->dtype == kernels::DType::kBF16) {
      std::memcpy(host.data() + at, t->data, n * sizeof(bf16_t));
    } else {
      for (int64_t i = 0; i < n; ++i) host[at + i] = kernels::FloatToBf16(t->at(i));
    }
    at += n;
  }
  ASSIGN_OR_RETURN(m.w, memory_.Alloc<bf16_t>(m.rows * m.cols));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpy(m.w, host.data(), host.size() * sizeof(bf16_t), cudaMemcpyHostToDevice));
  bytes += static_cast<int64_t>(host.size() * sizeof(bf16_t));
  return m;
}

absl::StatusOr<float*> CudaWeights::UploadFloats(const TensorView& t) {
  if (!t.present()) return nullptr;
  std::vector<float> host(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) host[i] = t.at(i);
  ASSIGN_OR_RETURN(float* p, memory_.Alloc<float>(host.size()));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpy(p, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  bytes += static_cast<int64_t>(host.size() * sizeof(float));
  return p;
}

absl::Status CudaWeights::Upload(const Model& model, bool fused_in_proj) {
  const ModelConfig& config = model.config();
  const ModelWeights& w = model.checkpoint().weights();
  ASSIGN_OR_RETURN(DeviceMatrix e, UploadMatrix({&w.embed_tokens}));
  embed = e.w;
  if (w.lm_head.data == w.embed_tokens.data) {
    lm_head = e;  // tied
  } else {
    ASSIGN_OR_RETURN(lm_head, UploadMatrix({&w.lm_head}));
  }
  ASSIGN_OR_RETURN(final_norm, UploadFloats(w.final_norm));
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    DeviceLayer d;
    d.type = config.layer_types[l];
    ASSIGN_OR_RETURN(d.input_norm, UploadFloats(lw.input_layernorm));
    ASSIGN_OR_RETURN(d.post_norm, UploadFloats(lw.post_attention_layernorm));
    ASSIGN_OR_RETURN(d.gate_up, UploadMatrix({&lw.gate_proj, &lw.up_proj}));
    ASSIGN_OR_RETURN(d.down, UploadMatrix({&lw.down_proj}));
    ASSIGN_OR_RETURN(d.o, UploadMatrix({&lw.o_proj}));
    const std::vector<const TensorView*> parts = {&lw.q_proj, &lw.k_proj, &lw.v_proj, &lw.g_proj,
                                                  &lw.a_proj, &lw.b_proj, &lw.conv_w1};
    int64_t fused_rows = 0;
    for (const TensorView* t : parts)
      fused_rows += t->present() && !t->shape.empty() ? t->shape[0] : 0;
    // cuBLASLt takes the fused GEMM only with 16-byte output rows (rows % 4); otherwise the
    // whole projection would run on the CUDA-core fallback, where unfused only a and b do.
    if (d.type == LayerType::kJet && fused_in_proj && fused_rows % 4 == 0) {
      for (const TensorView* t : parts) {
        if (!t->present() || t->shape.empty()) {
          return absl::InternalError(absl::StrCat("jet layer ", l, ": a projection is missing"));
        }
        d.in_parts.widths[d.in_parts.count++] = t->shape[0];
      }
      ASSIGN_OR_RETURN(d.in_proj, UploadMatrix({&lw.q_proj, &lw.k_proj, &lw.v_proj, &lw.g_proj,
                                                &lw.a_proj, &lw.b_proj, &lw.conv_w1}));
    } else {
      ASSIGN_OR_RETURN(d.q, UploadMatrix({&lw.q_proj}));
      ASSIGN_OR_RETURN(d.k, UploadMatrix({&lw.k_proj}));
      ASSIGN_OR_RETURN(d.v, UploadMatrix({&lw.v_proj}));
      ASSIGN_OR_RETURN(d.q_bias, UploadFloats(lw.q_bias));
      ASSIGN_OR_RETURN(d.k_bias, UploadFloats(lw.k_bias));
      ASSIGN_OR_RETURN(d.v_bias, UploadFloats(lw.v_bias));
      ASSIGN_OR_RETURN(d.g, UploadMatrix({&lw.g_proj}));
      ASSIGN_OR_RETURN(d.a, UploadMatrix({&lw.a_proj}));
      ASSIGN_OR_RETURN(d.b, UploadMatrix({&lw.b_proj}));
      ASSIGN_OR_RETURN(d.conv_w1, UploadMatrix({&lw.conv_w1}));
    }
    ASSIGN_OR_RETURN(d.conv_w2, UploadMatrix({&lw.conv_w2}));
    ASSIGN_OR_RETURN(d.a_log, UploadFloats(lw.A_log));
    ASSIGN_OR_RETURN(d.dt_bias, UploadFloats(lw.dt_bias));
    ASSIGN_OR_RETURN(d.conv_w2_bias, UploadFloats(lw.conv_w2_bias));
    ASSIGN_OR_RETURN(d.o_norm, UploadFloats(lw.o_norm));
    layers.push_back(d);
  }
  return absl::OkStatus();
}

}  // namespace jetserve
