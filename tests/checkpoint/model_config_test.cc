#include "engine/checkpoint/model_config.h"

#include <filesystem>
#include <string>

#include "engine/checkpoint/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/checkpoint/checkpoint_test_util.h"
#include "tests/test_paths.h"

namespace jetserve {
namespace {

using ::testing::HasSubstr;
using testing::SharedModelDir;
using testing::TinyConfig;

absl::StatusOr<ModelConfig> Parse(const nlohmann::json& j) {
  return ModelConfig::FromJson(j.dump(), "/x/config.json");
}

// The error text of parsing `j`, or "OK" when it parses.
std::string ErrorOf(const nlohmann::json& j) {
  auto c = Parse(j);
  return c.ok() ? "OK" : std::string(c.status().message());
}

int64_t ParamCount(const ModelConfig& c) {
  int64_t n = 0;
  for (const ExpectedTensor& t : ExpectedTensors(c)) {
    int64_t e = 1;
    for (int64_t d : t.shape) e *= d;
    n += e;
  }
  return n;
}

TEST(CheckpointConfigTest, Real2B) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  auto c = ModelConfig::Load(SharedModelDir() + "/config-2B.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "jet_nemotron");
  EXPECT_EQ(c->hidden_size, 1536);
  EXPECT_EQ(c->intermediate_size, 8960);
  EXPECT_EQ(c->num_hidden_layers, 28);
  EXPECT_EQ(c->num_attention_heads, 12);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 151643);
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{151643});
  EXPECT_EQ(c->num_layers_of(LayerType::kJet), 24);
  EXPECT_EQ(c->num_layers_of(LayerType::kAttn), 2);
  EXPECT_EQ(c->num_layers_of(LayerType::kSwa), 2);
  EXPECT_EQ(c->layer_types[14], LayerType::kAttn);
  EXPECT_EQ(c->layer_types[20], LayerType::kSwa);
  EXPECT_EQ(c->swa_window_size, 1152);
  EXPECT_EQ(c->jet.num_heads, 12);
  EXPECT_EQ(c->jet.head_dim, 96);
  EXPECT_EQ(c->jet.value_head_dim, 256);  // 96 * 2.6666666667
  EXPECT_EQ(c->jet.key_dim(), 1152);
  EXPECT_EQ(c->jet.value_dim(), 3072);
  EXPECT_EQ(c->jet.generator_dim(), 384);
  EXPECT_EQ(c->jet.conv_size, 4);
  EXPECT_FLOAT_EQ(c->jet.norm_eps, 1e-5f);  // the string "1e-5"
  // The design doc gives 1.97 B parameters.
  EXPECT_NEAR(static_cast<double>(ParamCount(*c)), 1.97e9, 0.01e9);
}

TEST(CheckpointConfigTest, Real4B) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  auto c = ModelConfig::Load(SharedModelDir() + "/config-4B.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 2048);
  EXPECT_EQ(c->head_dim, 128);
  // The real config has 26 jet / 3 attn / 7 swa layers (the design doc's table says 24/3/9);
  // with these counts the parameter count matches the doc's 3.96 B.
  EXPECT_EQ(c->num_layers_of(LayerType::kJet), 26);
  EXPECT_EQ(c->num_layers_of(LayerType::kAttn), 3);
  EXPECT_EQ(c->num_layers_of(LayerType::kSwa), 7);
  EXPECT_EQ(c->swa_window_size, 2048);
  EXPECT_EQ(c->jet.head_dim, 128);
  EXPECT_EQ(c->jet.value_head_dim, 256);
  EXPECT_EQ(c->jet.key_dim(), 2048);
  EXPECT_EQ(c->jet.value_dim(), 4096);
  EXPECT_NEAR(static_cast<double>(ParamCount(*c)), 3.96e9, 0.01e9);
}

TEST(CheckpointConfigTest, Tiny) {
  auto c = Parse(TinyConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 12);
  EXPECT_EQ(c->jet.value_head_dim, 32);
  EXPECT_EQ(c->jet.generator_dim(), 8);
  EXPECT_EQ(c->layer_types, (std::vector<LayerType>{LayerType::kJet, LayerType::kAttn,
                                                    LayerType::kSwa, LayerType::kJet}));
  EXPECT_EQ(LayerTypeName(LayerType::kSwa), "swa");
}

TEST(CheckpointConfigTest, LayerTypesAsPythonListString) {
  nlohmann::json j = TinyConfig();
  j["layer_types"] = "['jet', \"attn\",'swa' , 'jet',]";
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layer_types[2], LayerType::kSwa);
  j["layer_types"] = "jet, attn";
  EXPECT_THAT(ErrorOf(j), HasSubstr("not a list of quoted names"));
}

TEST(CheckpointConfigTest, EosAsListAndNull) {
  nlohmann::json j = TinyConfig();
  j["eos_token_id"] = {2, 7};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{2, 7}));
  j["eos_token_id"] = nullptr;
  j["bos_token_id"] = nullptr;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->bos_token_id, -1);
  j["eos_token_id"] = 300;
  EXPECT_THAT(ErrorOf(j), HasSubstr("'eos_token_id' 300"));
}

TEST(CheckpointConfigTest, HeadDimFieldWins) {
  nlohmann::json j = TinyConfig();
  j["head_dim"] = 16;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
  j["num_attention_heads"] = 5;  // 48 % 5 != 0 is fine with an explicit head_dim...
  j["num_key_value_heads"] = 5;
  EXPECT_EQ(ErrorOf(j), "OK");
  j.erase("head_dim");  // ...but not without one
  EXPECT_THAT(ErrorOf(j), HasSubstr("hidden_size 48 is not divisible by num_attention_heads 5"));
}

TEST(CheckpointConfigTest, ExpandVRounding) {
  nlohmann::json j = TinyConfig();
  j["efficient_attention_config"]["jet"]["expand_v"] = 2.666667;  // 12 * 2.666667 = 32.000004
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->jet.value_head_dim, 32);
  j["efficient_attention_config"]["jet"]["expand_v"] = 2.3;  // 27.6
  EXPECT_EQ(ErrorOf(j),
            "/x/config.json: efficient_attention_config.jet: head_dim 12 * expand_v 2.3 = 27.6 is "
            "not an integer value head dim (Dv)");
}

TEST(CheckpointConfigTest, QwenConfigWithoutLayerTypesIsAllAttention) {
  nlohmann::json j = TinyConfig();
  j.erase("layer_types");
  EXPECT_THAT(ErrorOf(j), HasSubstr("missing required field 'layer_types'"));
  j["model_type"] = "qwen2";
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers_of(LayerType::kAttn), 4);
}

TEST(CheckpointConfigTest, Errors) {
  struct Case {
    std::string pointer;   // JSON pointer to change
    nlohmann::json value;  // null: erase
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"/hidden_size", nullptr, "/x/config.json: missing required field 'hidden_size'"},
      {"/hidden_size", -48, "'hidden_size' must be a positive integer, got -48"},
      {"/hidden_size", "48", "'hidden_size' must be an integer, got \"48\""},
      {"/vocab_size", 0, "'vocab_size' must be a positive integer, got 0"},
      {"/intermediate_size", 1.5, "'intermediate_size' must be an integer, got 1.5"},
      {"/num_key_value_heads", 3,
       "num_attention_heads 4 is not divisible by num_key_value_heads 3"},
      {"/head_dim", 13, "head_dim 13 is odd"},
      {"/rms_norm_eps", "abc", "'rms_norm_eps' must be a number"},
      {"/rms_norm_eps", 0, "'rms_norm_eps' must be positive"},
      // Positive doubles that a float (as the engine keeps them) would turn into 0 or inf.
      {"/rms_norm_eps", 1e-300, "'rms_norm_eps' 1e-300 is outside the range of a float"},
      {"/rms_norm_eps", "1e300", "'rms_norm_eps' 1e+300 is outside the range of a float"},
      {"/rope_scaling", {{"type", "yarn"}, {"factor", 4}}, "'rope_scaling'"},
      {"/tie_word_embeddings", 1, "'tie_word_embeddings' must be true or false"},
      {"/layer_types",
       {"jet", "attn", "mamba", "jet"},
       "/x/config.json: unknown layer type 'mamba' at layer_types[2] (supported: attn, swa, jet)"},
      {"/layer_types",
       {"jet", "attn", "jet"},
       "/x/config.json: 'layer_types' has 3 entries but num_hidden_layers is 4"},
      {"/layer_types", 5, "'layer_types' must be a list"},
      {"/efficient_attention_config/jet", nullptr, "'efficient_attention_config.jet' is missing"},
      {"/efficient_attention_config/swa", nullptr, "'efficient_attention_config.swa' is missing"},
      {"/efficient_attention_config/swa/window_size", 0,
       "'efficient_attention_config.swa.window_size' must be a positive integer, got 0"},
      {"/efficient_attention_config/jet/conv_size", 0,
       "'efficient_attention_config.jet.conv_size' must be a positive integer, got 0"},
      {"/efficient_attention_config/jet/num_heads", nullptr,
       "missing required field 'efficient_attention_config.jet.num_heads'"},
      {"/efficient_attention_config/jet/dconv_generator_reduction", 5,
       "value_dim 64 (num_heads * Dv) is not divisible by dconv_generator_reduction 5"},
      {"/efficient_attention_config/jet/norm_eps", "1e-5x",
       "'efficient_attention_config.jet.norm_eps' must be a number"},
      {"/efficient_attention_config/jet/norm_eps", 1e-50,
       "'efficient_attention_config.jet.norm_eps' 1e-50 is outside the range of a float"},
      {"/bos_token_id", 1000, "'bos_token_id' 1000 is outside the vocabulary"},
      // The context length decides every limit: required, and room for a prompt and a token.
      {"/max_position_embeddings", nullptr, "missing required field 'max_position_embeddings'"},
      {"/max_position_embeddings", 1, "max_position_embeddings 1 leaves no room"},
      // A RoPE base below 1 inverts the frequencies; a tiny one overflows them (NaN logits).
      {"/rope_theta", 1e-300, "rope_theta 1e-300 is below 1"},
      {"/rope_theta", 0.5, "rope_theta 0.5 is below 1"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = TinyConfig();
    const nlohmann::json::json_pointer ptr(c.pointer);
    if (c.value.is_null()) {
      j[ptr.parent_pointer()].erase(ptr.back());
    } else {
      j[ptr] = c.value;
    }
    EXPECT_THAT(ErrorOf(j), HasSubstr(c.expected)) << c.pointer << " = " << c.value;
    EXPECT_THAT(ErrorOf(j), ::testing::StartsWith("/x/config.json: ")) << c.pointer;
  }
}

// A corrupt config can hold a value megabytes long: the message quotes a bounded excerpt of it.
TEST(CheckpointConfigTest, LongBadValuesAreCutInErrors) {
  nlohmann::json j = TinyConfig();
  j["hidden_size"] = nlohmann::json::array();
  for (int i = 0; i < 100000; ++i) j["hidden_size"].push_back(i);
  std::string error = ErrorOf(j);
  EXPECT_THAT(error, HasSubstr("'hidden_size' must be an integer, got [0,1,2,3,"));
  EXPECT_THAT(error, HasSubstr("... (588891 characters)"));
  EXPECT_LT(error.size(), 400u);

  j = TinyConfig();
  j["layer_types"][2] = std::string(1 << 20, 'x');
  error = ErrorOf(j);
  EXPECT_THAT(error, HasSubstr("unknown layer type 'xxxx"));
  EXPECT_THAT(error, HasSubstr("... (1048576 bytes)' at layer_types[2]"));
  EXPECT_LT(error.size(), 400u);

  // Not cut inside a UTF-8 character: 'é' is two bytes, the cut would fall after byte 160.
  std::string accented = "a";
  for (int i = 0; i < 200; ++i) accented += "\xc3\xa9";
  j["layer_types"][2] = accented;
  error = ErrorOf(j);
  EXPECT_THAT(error, HasSubstr("unknown layer type 'a\xc3\xa9"));
  EXPECT_THAT(error, HasSubstr("\xc3\xa9... (401 bytes)"));
}

TEST(CheckpointConfigTest, NoJetOrSwaSectionNeededWithoutThoseLayers) {
  nlohmann::json j = TinyConfig();
  j["layer_types"] = {"attn", "attn", "attn", "attn"};
  j.erase("efficient_attention_config");
  EXPECT_EQ(ErrorOf(j), "OK");
}

TEST(CheckpointConfigTest, InvalidJsonAndMissingFile) {
  auto c = ModelConfig::FromJson("{\"hidden_size\": 4,", "/x/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "/x/config.json: not valid JSON");
  c = ModelConfig::FromJson("[1, 2]", "/x/config.json");
  EXPECT_EQ(c.status().message(), "/x/config.json: not a JSON object");
  c = ModelConfig::Load("/nonexistent/dir/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/dir/config.json: cannot read"));
  const std::string dir = testing::ScratchDir("config_is_a_directory") + "/config.json";
  std::filesystem::create_directories(dir);
  c = ModelConfig::Load(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), dir + ": is a directory, not a file");
}

TEST(CheckpointConfigTest, ExpectedTensorsTiedAndUntied) {
  auto c = Parse(TinyConfig());
  ASSERT_TRUE(c.ok());
  std::vector<ExpectedTensor> tied = ExpectedTensors(*c);
  EXPECT_EQ(tied.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(tied.back().name, "model.norm.weight");
  // 1 + jet 13+5 + attn 7+5 + swa 7+5 + jet 13+5 + norm.
  EXPECT_EQ(tied.size(), 1u + 18 + 12 + 12 + 18 + 1);
  c->tie_word_embeddings = false;
  std::vector<ExpectedTensor> untied = ExpectedTensors(*c);
  EXPECT_EQ(untied.size(), tied.size() + 1);
  EXPECT_EQ(untied.back().name, "lm_head.weight");
  EXPECT_EQ(untied.back().shape, (std::vector<int64_t>{300, 48}));
}

}  // namespace
}  // namespace jetserve
