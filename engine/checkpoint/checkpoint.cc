#include "engine/checkpoint/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace jetserve {

namespace fs = std::filesystem;

struct Checkpoint::MappedFile {
  std::unique_ptr<SafetensorsFile> file;
};

int64_t TensorView::numel() const {
  if (data == nullptr) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  using Shape = std::vector<int64_t>;
  const int64_t h = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  const int64_t q_dim = int64_t{c.num_attention_heads} * c.head_dim;   // Nq*hd
  const int64_t kv_dim = int64_t{c.num_key_value_heads} * c.head_dim;  // Nkv*hd
  const JetConfig& jet = c.jet;

  std::vector<ExpectedTensor> out;
  auto add = [&out](std::string name, Shape shape) {
    out.push_back({std::move(name), std::move(shape)});
  };
  add("model.embed_tokens.weight", {c.vocab_size, h});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const std::string a = p + "self_attn.";
    if (c.layer_types[l] == LayerType::kJet) {
      const int64_t key_dim = jet.key_dim();
      const int64_t value_dim = jet.value_dim();
      const int64_t gen_dim = value_dim / jet.dconv_generator_reduction;
      const int64_t hj = jet.num_heads;
      add(a + "q_proj.weight", {key_dim, h});
      add(a + "k_proj.weight", {key_dim, h});
      add(a + "v_proj.weight", {value_dim, h});
      add(a + "g_proj.weight", {value_dim, h});
      add(a + "a_proj.weight", {hj, h});
      add(a + "b_proj.weight", {hj, h});
      add(a + "A_log", {hj});
      add(a + "dt_bias", {hj});
      add(a + "dynamic_conv1d.kernel_generator.w1.weight", {gen_dim, h});
      add(a + "dynamic_conv1d.kernel_generator.w2.weight", {value_dim * jet.conv_size, gen_dim});
      add(a + "dynamic_conv1d.kernel_generator.w2.bias", {value_dim * jet.conv_size});
      add(a + "o_norm.weight", {jet.value_head_dim});
      add(a + "o_proj.weight", {h, value_dim});
    } else {  // attn and swa share Qwen2 attention weights
      add(a + "q_proj.weight", {q_dim, h});
      add(a + "q_proj.bias", {q_dim});
      add(a + "k_proj.weight", {kv_dim, h});
      add(a + "k_proj.bias", {kv_dim});
      add(a + "v_proj.weight", {kv_dim, h});
      add(a + "v_proj.bias", {kv_dim});
      add(a + "o_proj.weight", {h, q_dim});
    }
    add(p + "mlp.gate_proj.weight", {inter, h});
    add(p + "mlp.up_proj.weight", {inter, h});
    add(p + "mlp.down_proj.weight", {h, inter});
    add(p + "input_layernorm.weight", {h});
    add(p + "post_attention_layernorm.weight", {h});
  }
  add("model.norm.weight", {h});
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, h});
  return out;
}

namespace {

// weight_map of model.safetensors.index.json: tensor name -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(index_path, ": cannot read"));
  std::ostringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  nlohmann::json j = nlohmann::json::parse(s, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a valid JSON object"));
  }
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing object 'weight_map'"));
  }
  std::map<std::string, std::string> out;
  for (auto& [name, file] : wm->items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map entry for tensor '", name, "' is not a string"));
    }
    // Shards live beside the index; refuse anything that could point elsewhere.
    const std::string shard = file.get<std::string>();
    const fs::path sp(shard);
    bool escapes = shard.empty() || sp.is_absolute();
    for (const auto& part : sp) escapes |= (part == "..");
    if (escapes) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry for tensor '",
                                                     name, "' names an invalid shard '", shard,
                                                     "'"));
    }
    out[name] = shard;
  }
  return out;
}

}  // namespace

Checkpoint::~Checkpoint() = default;

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->dir_ = dir;
  const fs::path root(dir);
  ASSIGN_OR_RETURN(ckpt->config_, ModelConfig::Load((root / "config.json").string()));
  const ModelConfig& config = ckpt->config_;

  // Where each tensor lives: either the single file, or the shard weight_map names.
  const std::string single_path = (root / "model.safetensors").string();
  const std::string index_path = (root / "model.safetensors.index.json").string();
  std::error_code ec;
  const SafetensorsFile* single = nullptr;
  std::map<std::string, std::string> weight_map;
  std::map<std::string, const SafetensorsFile*> shards;  // shard file name -> file
  // Like transformers, a single model.safetensors wins over an index when both exist.
  if (fs::exists(single_path, ec)) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(single_path));
    single = f.get();
    ckpt->files_.push_back(std::make_unique<MappedFile>(MappedFile{std::move(f)}));
  } else if (fs::exists(index_path, ec)) {
    ASSIGN_OR_RETURN(weight_map, ReadWeightMap(index_path));
    for (const auto& [tensor, shard] : weight_map) {
      if (shards.count(shard) != 0) continue;
      auto f = SafetensorsFile::Open((root / shard).string());
      if (!f.ok()) {
        return absl::Status(f.status().code(),
                            absl::StrCat(index_path, ": shard '", shard, "' (holding tensor '",
                                         tensor, "') cannot be loaded: ", f.status().message()));
      }
      shards[shard] = f->get();
      ckpt->files_.push_back(std::make_unique<MappedFile>(MappedFile{*std::move(f)}));
    }
  } else {
    return absl::NotFoundError(
        absl::StrCat(single_path, ": not found, and there is no ", index_path, " either"));
  }

  // Check every tensor the config implies before handing out any view.
  std::unordered_map<std::string, TensorView> views;
  for (const ExpectedTensor& want : ExpectedTensors(config)) {
    const SafetensorsFile* file = single;
    if (file == nullptr) {
      auto it = weight_map.find(want.name);
      if (it == weight_map.end()) {
        return absl::NotFoundError(
            absl::StrCat(index_path, ": tensor '", want.name, "' is missing from weight_map"));
      }
      file = shards.at(it->second);
    }
    const SafetensorsEntry* e = file->Find(want.name);
    if (e == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(file->path(), ": tensor '", want.name, "' is missing"));
    }
    if (!e->dtype) {
      return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor '", want.name,
                                                     "' has unsupported dtype ", e->dtype_name,
                                                     " (supported: BF16, F16, F32)"));
    }
    if (e->shape != want.shape) {
      return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor '", want.name,
                                                     "' has shape ", ShapeString(e->shape),
                                                     ", expected ", ShapeString(want.shape)));
    }
    views[want.name] = TensorView{want.name, *e->dtype, e->shape, e->data};
    ckpt->weight_bytes_ += e->nbytes();
  }

  auto get = [&views](const std::string& name) { return views.at(name); };
  ModelWeights& w = ckpt->weights_;
  w.embed_tokens = get("model.embed_tokens.weight");
  w.final_norm = get("model.norm.weight");
  w.lm_head = config.tie_word_embeddings ? w.embed_tokens : get("lm_head.weight");
  w.layers.resize(config.num_hidden_layers);
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const std::string a = p + "self_attn.";
    lw.input_layernorm = get(p + "input_layernorm.weight");
    lw.post_attention_layernorm = get(p + "post_attention_layernorm.weight");
    lw.gate_proj = get(p + "mlp.gate_proj.weight");
    lw.up_proj = get(p + "mlp.up_proj.weight");
    lw.down_proj = get(p + "mlp.down_proj.weight");
    lw.q_proj = get(a + "q_proj.weight");
    lw.k_proj = get(a + "k_proj.weight");
    lw.v_proj = get(a + "v_proj.weight");
    lw.o_proj = get(a + "o_proj.weight");
    if (config.layer_types[l] == LayerType::kJet) {
      const std::string g = a + "dynamic_conv1d.kernel_generator.";
      lw.g_proj = get(a + "g_proj.weight");
      lw.a_proj = get(a + "a_proj.weight");
      lw.b_proj = get(a + "b_proj.weight");
      lw.A_log = get(a + "A_log");
      lw.dt_bias = get(a + "dt_bias");
      lw.conv_w1 = get(g + "w1.weight");
      lw.conv_w2 = get(g + "w2.weight");
      lw.conv_w2_bias = get(g + "w2.bias");
      lw.o_norm = get(a + "o_norm.weight");
    } else {
      lw.q_bias = get(a + "q_proj.bias");
      lw.k_bias = get(a + "k_proj.bias");
      lw.v_bias = get(a + "v_proj.bias");
    }
  }
  return ckpt;
}

}  // namespace jetserve
