// The model's hyper-parameters, read from a HuggingFace config.json (see
// shared/design/jet-nemotron.md §1). Validated on parse: every derived size is an integer and
// every layer type is known, so later code can trust it.
#ifndef JETSERVE_ENGINE_CHECKPOINT_MODEL_CONFIG_H_
#define JETSERVE_ENGINE_CHECKPOINT_MODEL_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace jetserve {

enum class LayerType { kAttn, kSwa, kJet };

std::string_view LayerTypeName(LayerType t);  // "attn", "swa", "jet"

struct JetConfig {
  int num_heads = 0;                  // Hj
  int head_dim = 0;                   // Dk
  double expand_v = 1.0;              // Dv = Dk * expand_v, must be (within 1e-6) an integer
  int value_head_dim = 0;             // Dv, derived
  int conv_size = 0;                  // W
  int dconv_generator_reduction = 0;  // R; value_dim must divide by it
  float norm_eps = 1e-5f;             // may be a string in config.json ("1e-5")
  int key_dim() const { return num_heads * head_dim; }                           // Hj*Dk
  int value_dim() const { return num_heads * value_head_dim; }                   // Hj*Dv
  int generator_dim() const { return value_dim() / dconv_generator_reduction; }  // value_dim/R
};

struct ModelConfig {
  std::string model_type;     // "jet_nemotron" for real checkpoints
  int hidden_size = 0;        // H
  int intermediate_size = 0;  // I
  int num_hidden_layers = 0;
  int num_attention_heads = 0;  // Nq
  int num_key_value_heads = 0;  // Nkv
  int head_dim = 0;             // hd = H / Nq unless config has head_dim
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  int bos_token_id = -1;               // -1: none
  std::vector<int> eos_token_ids;      // eos_token_id may be an int or a list
  std::vector<LayerType> layer_types;  // size num_hidden_layers
  JetConfig jet;                       // meaningful when any layer is jet
  int swa_window_size = 0;             // Wn; meaningful when any layer is swa

  int num_layers_of(LayerType t) const;
  bool has_layer_type(LayerType t) const { return num_layers_of(t) > 0; }

  // Parses and validates config.json text. `source` names the file in error messages.
  static absl::StatusOr<ModelConfig> FromJson(std::string_view json_text, std::string_view source);
  // Reads and parses a config.json file.
  static absl::StatusOr<ModelConfig> Load(const std::string& path);
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CHECKPOINT_MODEL_CONFIG_H_
