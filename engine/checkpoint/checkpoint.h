// A loaded HuggingFace checkpoint directory: config.json plus memory-mapped safetensors
// (single file or shards with model.safetensors.index.json). Every tensor the config implies is
// checked for presence, dtype and shape before anything runs.
#ifndef JETSERVE_ENGINE_CHECKPOINT_CHECKPOINT_H_
#define JETSERVE_ENGINE_CHECKPOINT_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/model_config.h"
#include "kernels/dtype.h"

namespace jetserve {

// A view of one tensor inside a memory-mapped file. Valid while its Checkpoint lives.
struct TensorView {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // nullptr for a tensor that is absent (e.g. bias of a jet layer)
  bool present() const { return data != nullptr; }
  int64_t numel() const;
  // Element i as fp32, whatever the stored dtype.
  float at(int64_t i) const { return kernels::LoadAsFloat(data, dtype, i); }
};

// Weights of one decoder layer. Which fields are present depends on the layer type.
struct LayerWeights {
  TensorView input_layernorm;           // [H]
  TensorView post_attention_layernorm;  // [H]
  TensorView gate_proj, up_proj;        // [I, H]
  TensorView down_proj;                 // [H, I]
  // attn/swa: q [Nq*hd, H] (+bias), k/v [Nkv*hd, H] (+bias), o [H, Nq*hd].
  // jet: q/k [key_dim, H], v/g [value_dim, H], o [H, value_dim].
  TensorView q_proj, k_proj, v_proj, o_proj;
  TensorView q_bias, k_bias, v_bias;  // attn/swa only
  // jet only.
  TensorView g_proj;          // [value_dim, H]
  TensorView a_proj, b_proj;  // [Hj, H]
  TensorView A_log, dt_bias;  // [Hj]
  TensorView conv_w1;         // [value_dim/R, H]
  TensorView conv_w2;         // [value_dim*W, value_dim/R]
  TensorView conv_w2_bias;    // [value_dim*W]
  TensorView o_norm;          // [Dv]
};

struct ModelWeights {
  TensorView embed_tokens;  // [V, H]
  TensorView final_norm;    // [H]
  TensorView lm_head;       // [V, H]; the same view as embed_tokens when tied
  std::vector<LayerWeights> layers;
};

class Checkpoint {
 public:
  // Loads and validates `dir`. Errors name the file and, where relevant, the tensor.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // Total bytes of tensor data mapped.
  int64_t weight_bytes() const { return weight_bytes_; }

 private:
  Checkpoint() = default;
  struct MappedFile;
  std::string dir_;
  ModelConfig config_;
  ModelWeights weights_;
  int64_t weight_bytes_ = 0;
  std::vector<std::unique_ptr<MappedFile>> files_;
};

// The tensor names and shapes that `config` implies, in HF naming, in file order.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CHECKPOINT_CHECKPOINT_H_
