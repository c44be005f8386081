// The model's weights on the device, as the CUDA forward pass (cuda_backend.cc) reads them:
// every matrix bf16 (cuBLASLt's operand), norms and biases fp32. Uploaded once, freed with the
// object.
#ifndef JETSERVE_ENGINE_CUDA_WEIGHTS_H_
#define JETSERVE_ENGINE_CUDA_WEIGHTS_H_

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/model_config.h"
#include "engine/model.h"
#include "kernels/cuda/device_allocations.h"
#include "kernels/cuda/ops.h"

namespace jetserve {

struct DeviceMatrix {
  kernels::cuda::bf16_t* w = nullptr;  // [rows, cols]
  int64_t rows = 0, cols = 0;
};

struct DeviceLayer {
  LayerType type;
  float* input_norm = nullptr;  // [H]
  float* post_norm = nullptr;   // [H]
  DeviceMatrix gate_up;         // [2I, H]: gate rows then up rows
  DeviceMatrix down;            // [H, I]
  DeviceMatrix q, k, v, o;
  float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr;
  DeviceMatrix g, a, b, conv_w1, conv_w2;
  // Jet layers with the fused projection: q, k, v, g, a, b and conv_w1 as one matrix (one GEMM
  // instead of seven: the small ones ran far from the GEMM rate), and the rows of each part.
  DeviceMatrix in_proj;
  kernels::cuda::ColumnSplitDev in_parts;
  float *a_log = nullptr, *dt_bias = nullptr, *conv_w2_bias = nullptr, *o_norm = nullptr;
};

class CudaWeights {
 public:
  CudaWeights() = default;
  CudaWeights(const CudaWeights&) = delete;
  CudaWeights& operator=(const CudaWeights&) = delete;

  // Copies `model`'s weights to the device (synchronous copies). fused_in_proj: each jet
  // layer's seven input projections as one matrix (DeviceLayer::in_proj) instead of seven.
  absl::Status Upload(const Model& model, bool fused_in_proj);

  kernels::cuda::bf16_t* embed = nullptr;  // [V, H]
  DeviceMatrix lm_head;                    // [V, H]; the embedding's when tied
  float* final_norm = nullptr;
  std::vector<DeviceLayer> layers;
  int64_t bytes = 0;  // device bytes

 private:
  // Rows of one or more tensors (concatenated along rows) as one bf16 matrix; an absent
  // tensor gives an empty matrix.
  absl::StatusOr<DeviceMatrix> UploadMatrix(std::initializer_list<const TensorView*> parts);
  absl::StatusOr<float*> UploadFloats(const TensorView& t);

  kernels::cuda::DeviceAllocations memory_;  // every matrix and vector above
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CUDA_WEIGHTS_H_
