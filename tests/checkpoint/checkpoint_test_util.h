// Helpers shared by the checkpoint tests: a tiny config, and raw file writers for building
// corrupt safetensors files byte by byte.
#ifndef JETSERVE_TESTS_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_
#define JETSERVE_TESTS_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/checkpoint/checkpoint.h"
#include "nlohmann/json.hpp"

namespace jetserve::testing {

// H=48, Nq=4 (hd=12), Nkv=2, I=96, V=300, layers jet/attn/swa/jet;
// jet: Hj=2, Dk=12, Dv=32 (expand_v 2.6666666667 as in the 2B config), value_dim=64, R=8, W=4.
inline nlohmann::json TinyConfig() {
  return nlohmann::json::parse(R"({
    "architectures": ["JetNemotronForCausalLM"],
    "model_type": "jet_nemotron",
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "rope_scaling": null,
    "vocab_size": 300,
    "max_position_embeddings": 512,
    "tie_word_embeddings": true,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "layer_types": ["jet", "attn", "swa", "jet"],
    "efficient_attention_config": {
      "jet": {"conv_size": 4, "dconv_generator_reduction": 8, "expand_v": 2.6666666667,
              "head_dim": 12, "mode": "chunk", "norm_eps": "1e-5", "num_heads": 2},
      "swa": {"window_size": 8}
    },
    "torch_dtype": "bfloat16"
  })");
}

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A safetensors file from a literal header and data region: 8-byte little-endian length first.
inline std::string RawSafetensors(const std::string& header, const std::string& data) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

// Every view of `w` (absent ones skipped), for checks by name.
inline std::vector<TensorView> AllViews(const ModelWeights& w) {
  std::vector<TensorView> out = {w.embed_tokens, w.final_norm, w.lm_head};
  for (const LayerWeights& l : w.layers) {
    for (const TensorView* v : {&l.input_layernorm, &l.post_attention_layernorm,
                                &l.gate_proj,       &l.up_proj,
                                &l.down_proj,       &l.q_proj,
                                &l.k_proj,          &l.v_proj,
                                &l.o_proj,          &l.q_bias,
                                &l.k_bias,          &l.v_bias,
                                &l.g_proj,          &l.a_proj,
                                &l.b_proj,          &l.A_log,
                                &l.dt_bias,         &l.conv_w1,
                                &l.conv_w2,         &l.conv_w2_bias,
                                &l.o_norm}) {
      if (v->present()) out.push_back(*v);
    }
  }
  return out;
}

}  // namespace jetserve::testing

#endif  // JETSERVE_TESTS_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_
