// Fuzzes ModelConfig::FromJson (config.json) with arbitrary text, and checks that every config it
// accepts is as validated as model_config.h promises: the sizes later code divides by and
// allocates from are positive and consistent, and the layer pattern is complete.
#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/model_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using jetserve::LayerType;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = jetserve::ModelConfig::FromJson(text, "fuzz/config.json");
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
               parsed.status().ToString());
    // Errors name the file, so a user knows which one to fix.
    FUZZ_CHECK(absl::StartsWith(parsed.status().message(), "fuzz/config.json"),
               parsed.status().ToString());
    return 0;
  }
  const jetserve::ModelConfig& c = *parsed;
  FUZZ_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.vocab_size > 0, "sizes");
  FUZZ_CHECK(
      c.num_hidden_layers > 0 && c.layer_types.size() == static_cast<size_t>(c.num_hidden_layers),
      "layer_types");
  FUZZ_CHECK(c.num_attention_heads > 0 && c.num_key_value_heads > 0 &&
                 c.num_attention_heads % c.num_key_value_heads == 0,
             "heads");
  FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, absl::StrCat("head_dim ", c.head_dim));
  FUZZ_CHECK(c.max_position_embeddings >= 0, "max_position_embeddings");
  // The engine computes in float: the parsed doubles must survive the narrowing.
  FUZZ_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0,
             absl::StrCat("rms_norm_eps ", c.rms_norm_eps));
  FUZZ_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0, "rope_theta");
  FUZZ_CHECK(c.bos_token_id >= -1 && c.bos_token_id < c.vocab_size, "bos_token_id");
  for (int eos : c.eos_token_ids) FUZZ_CHECK(eos >= 0 && eos < c.vocab_size, "eos_token_id");
  if (c.has_layer_type(LayerType::kJet)) {
    const jetserve::JetConfig& j = c.jet;
    FUZZ_CHECK(j.num_heads > 0 && j.head_dim > 0 && j.value_head_dim > 0 && j.conv_size > 0 &&
                   j.dconv_generator_reduction > 0,
               "jet sizes");
    FUZZ_CHECK(std::fabs(j.head_dim * j.expand_v - j.value_head_dim) <=
                   1e-6 * std::max(1.0, j.head_dim * j.expand_v),
               "value_head_dim = head_dim * expand_v");
    FUZZ_CHECK(j.value_dim() % j.dconv_generator_reduction == 0 && j.generator_dim() > 0,
               "generator_dim");
    FUZZ_CHECK(std::isfinite(j.norm_eps) && j.norm_eps > 0,
               absl::StrCat("jet norm_eps ", j.norm_eps));
  }
  if (c.has_layer_type(LayerType::kSwa)) FUZZ_CHECK(c.swa_window_size > 0, "swa window");
  return 0;
}
