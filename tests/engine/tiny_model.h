// A tiny random checkpoint with every layer type, for engine tests.
#ifndef JETSERVE_TESTS_ENGINE_TINY_MODEL_H_
#define JETSERVE_TESTS_ENGINE_TINY_MODEL_H_

#include <string>

#include "engine/checkpoint/checkpoint_writer.h"
#include "gtest/gtest.h"
#include "tests/test_paths.h"

namespace jetserve::testing {

// Odd sizes everywhere; a swa window (5) and KV page size small enough that a few dozen tokens
// wrap the ring and span several pages; expand_v 1.5; GQA 3:1.
inline constexpr char kTinyConfig[] = R"json({
  "model_type": "jet_nemotron",
  "hidden_size": 36, "intermediate_size": 52, "num_hidden_layers": 5,
  "num_attention_heads": 3, "num_key_value_heads": 1,
  "layer_types": ["jet", "attn", "swa", "jet", "attn"],
  "efficient_attention_config": {
    "jet": {"num_heads": 3, "head_dim": 6, "expand_v": 1.5, "conv_size": 4,
            "dconv_generator_reduction": 3, "norm_eps": "1e-5"},
    "swa": {"window_size": 5}},
  "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": null,
  "vocab_size": 97, "max_position_embeddings": 512, "tie_word_embeddings": false,
  "bos_token_id": 1, "eos_token_id": 2
})json";

// Writes the tiny checkpoint (seed 7) into a scratch dir named `name`; returns the dir.
inline std::string MakeTinyCheckpoint(const std::string& name, const char* config = kTinyConfig,
                                      uint64_t seed = 7) {
  RandomCheckpointOptions options;
  options.config_json = config;
  options.out_dir = ScratchDir(name);
  options.seed = seed;
  const absl::Status s = WriteRandomCheckpoint(options);
  EXPECT_TRUE(s.ok()) << s;
  return options.out_dir;
}

}  // namespace jetserve::testing

#endif  // JETSERVE_TESTS_ENGINE_TINY_MODEL_H_
