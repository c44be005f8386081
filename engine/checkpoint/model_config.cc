#include "engine/checkpoint/model_config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "engine/checkpoint/json_excerpt.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace jetserve {
namespace {

using Json = nlohmann::json;
constexpr int64_t kIntMax = std::numeric_limits<int>::max();

// Reads fields of one JSON object, producing errors of the form "<source>: <path>: ...".
class FieldReader {
 public:
  FieldReader(const Json& obj, std::string source, std::string prefix)
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  template <typename... Parts>
  absl::Status Error(const Parts&... parts) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", parts...));
  }

  // nullptr when absent or null.
  const Json* Find(std::string_view key) const {
    auto it = obj_.find(key);
    return (it == obj_.end() || it->is_null()) ? nullptr : &*it;
  }
  const std::string& source() const { return source_; }
  std::string Name(std::string_view key) const {
    return absl::StrCat("'", prefix_, std::string(key), "'");
  }

  // An integer field; float values must be integral (some tools write 1536.0).
  absl::StatusOr<std::optional<int64_t>> OptionalInt(std::string_view key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<int64_t>();
    if (v->is_number_integer() && !v->is_number_unsigned()) return v->get<int64_t>();
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(Name(key), " is out of range: ", JsonExcerpt(*v));
      }
      return static_cast<int64_t>(u);
    }
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
        return static_cast<int64_t>(d);
      }
    }
    return Error(Name(key), " must be an integer, got ", JsonExcerpt(*v));
  }

  // A positive integer that fits an int.
  absl::StatusOr<int> PositiveInt(std::string_view key, std::optional<int> fallback = {}) const {
    ASSIGN_OR_RETURN(std::optional<int64_t> v, OptionalInt(key));
    if (!v) {
      if (fallback) return *fallback;
      return Error("missing required field ", Name(key));
    }
    if (*v <= 0 || *v > kIntMax) return Error(Name(key), " must be a positive integer, got ", *v);
    return static_cast<int>(*v);
  }

  // A number, or a string holding one (the released configs write norm_eps as "1e-5").
  absl::StatusOr<double> Number(std::string_view key, std::optional<double> fallback) const {
    const Json* v = Find(key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      return Error("missing required field ", Name(key));
    }
    double d = 0;
    if (v->is_number()) {
      d = v->get<double>();
    } else if (!v->is_string() || !absl::SimpleAtod(v->get<std::string>(), &d)) {
      return Error(Name(key), " must be a number, got ", JsonExcerpt(*v));
    }
    if (!std::isfinite(d)) return Error(Name(key), " must be finite, got ", JsonExcerpt(*v));
    return d;
  }

  absl::StatusOr<double> PositiveNumber(std::string_view key,
                                        std::optional<double> fallback) const {
    ASSIGN_OR_RETURN(double d, Number(key, fallback));
    if (d <= 0) return Error(Name(key), " must be positive, got ", d);
    return d;
  }

  // For fields the engine keeps as float (the norm epsilons): positive as a double is not
  // enough, since 1e-300 would become 0 and 1e300 infinity (found by tests/fuzz/config_fuzz).
  absl::StatusOr<float> PositiveFloat(std::string_view key, std::optional<double> fallback) const {
    ASSIGN_OR_RETURN(double d, PositiveNumber(key, fallback));
    if (d < std::numeric_limits<float>::min() || d > std::numeric_limits<float>::max()) {
      return Error(Name(key), " ", d, " is outside the range of a float");
    }
    return static_cast<float>(d);
  }

 private:
  const Json& obj_;
  std::string source_;  // absl::StrCat takes absl::string_view, not std::string_view, here
  std::string prefix_;
};

// Parses the body of a Python list literal of strings, e.g. "['jet', 'attn']", as HF writes
// layer_types when the config was saved through str().
std::optional<std::vector<std::string>> ParsePythonStringList(absl::string_view text) {
  auto skip_space = [&text] {
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
      text.remove_prefix(1);
    }
  };
  skip_space();
  if (!absl::ConsumePrefix(&text, "[")) return std::nullopt;
  std::vector<std::string> items;
  while (true) {
    skip_space();
    if (absl::ConsumePrefix(&text, "]")) break;
    if (text.empty() || (text.front() != '\'' && text.front() != '"')) return std::nullopt;
    const char quote = text.front();
    text.remove_prefix(1);
    size_t close = text.find(quote);
    if (close == absl::string_view::npos) return std::nullopt;
    items.emplace_back(text.substr(0, close));
    text.remove_prefix(close + 1);
    skip_space();
    if (absl::ConsumePrefix(&text, ",")) continue;  // also allows a trailing comma
    if (!absl::ConsumePrefix(&text, "]")) return std::nullopt;
    break;
  }
  skip_space();
  if (!text.empty()) return std::nullopt;
  return items;
}

absl::Status ParseLayerTypes(const FieldReader& top, const Json* value,
                             const std::string& model_type, int num_layers,
                             std::vector<LayerType>* out) {
  std::vector<std::string> names;
  if (value == nullptr) {
    // A plain Qwen2 config has no layer_types: every layer is full attention.
    if (model_type != "qwen2") return top.Error("missing required field 'layer_types'");
    names.assign(num_layers, "attn");
  } else if (value->is_array()) {
    for (size_t i = 0; i < value->size(); ++i) {
      if (!(*value)[i].is_string()) {
        return top.Error("'layer_types[", i, "]' must be a string, got ", JsonExcerpt((*value)[i]));
      }
      names.push_back((*value)[i].get<std::string>());
    }
  } else if (value->is_string()) {
    std::optional<std::vector<std::string>> parsed =
        ParsePythonStringList(value->get<std::string>());
    if (!parsed) {
      return top.Error("'layer_types' is a string but not a list of quoted names: ",
                       JsonExcerpt(*value));
    }
    names = std::move(*parsed);
  } else {
    return top.Error("'layer_types' must be a list, got ", JsonExcerpt(*value));
  }
  if (static_cast<int64_t>(names.size()) != num_layers) {
    return top.Error("'layer_types' has ", names.size(), " entries but num_hidden_layers is ",
                     num_layers);
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "attn") {
      out->push_back(LayerType::kAttn);
    } else if (names[i] == "swa") {
      out->push_back(LayerType::kSwa);
    } else if (names[i] == "jet") {
      out->push_back(LayerType::kJet);
    } else {
      return top.Error("unknown layer type '", TextExcerpt(names[i]), "' at layer_types[", i,
                       "] (supported: attn, swa, jet)");
    }
  }
  return absl::OkStatus();
}

absl::Status ParseJet(const FieldReader& top, const Json& eac, JetConfig* jet) {
  auto it = eac.find("jet");
  if (it == eac.end() || !it->is_object()) {
    return top.Error("layer_types has jet layers but 'efficient_attention_config.jet' is missing");
  }
  FieldReader r(*it, top.source(), "efficient_attention_config.jet.");
  ASSIGN_OR_RETURN(jet->num_heads, r.PositiveInt("num_heads"));
  ASSIGN_OR_RETURN(jet->head_dim, r.PositiveInt("head_dim"));
  ASSIGN_OR_RETURN(jet->expand_v, r.PositiveNumber("expand_v", 1.0));
  ASSIGN_OR_RETURN(jet->conv_size, r.PositiveInt("conv_size"));
  ASSIGN_OR_RETURN(jet->dconv_generator_reduction, r.PositiveInt("dconv_generator_reduction"));
  ASSIGN_OR_RETURN(jet->norm_eps, r.PositiveFloat("norm_eps", 1e-5));

  // Dv must come out integral: 96 * 2.6666666667 = 256.0000000032 is 256. The tolerance is
  // relative so that an expand_v printed with fewer digits (2.666667) still rounds correctly.
  const double dv = jet->head_dim * jet->expand_v;
  const double rounded = std::round(dv);
  if (rounded < 1 || std::fabs(dv - rounded) > 1e-6 * std::max(1.0, dv) || rounded > kIntMax) {
    return top.Error("efficient_attention_config.jet: head_dim ", jet->head_dim, " * expand_v ",
                     jet->expand_v, " = ", dv, " is not an integer value head dim (Dv)");
  }
  jet->value_head_dim = static_cast<int>(rounded);
  const int64_t key_dim = int64_t{jet->num_heads} * jet->head_dim;
  const int64_t value_dim = int64_t{jet->num_heads} * jet->value_head_dim;
  if (key_dim > kIntMax || value_dim > kIntMax || value_dim * jet->conv_size > kIntMax) {
    return top.Error("efficient_attention_config.jet: sizes too large (value_dim ", value_dim,
                     ", conv_size ", jet->conv_size, ")");
  }
  if (value_dim % jet->dconv_generator_reduction != 0) {
    return top.Error("efficient_attention_config.jet: value_dim ", value_dim,
                     " (num_heads * Dv) is not divisible by dconv_generator_reduction ",
                     jet->dconv_generator_reduction);
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view LayerTypeName(LayerType t) {
  switch (t) {
    case LayerType::kAttn:
      return "attn";
    case LayerType::kSwa:
      return "swa";
    case LayerType::kJet:
      return "jet";
  }
  return "?";
}

int ModelConfig::num_layers_of(LayerType t) const {
  return static_cast<int>(std::count(layer_types.begin(), layer_types.end(), t));
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view json_text,
                                                  std::string_view source) {
  const std::string src(source);
  Json j = Json::parse(json_text.begin(), json_text.end(), /*cb=*/nullptr,
                       /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": not a JSON object"));
  }
  FieldReader r(j, src, "");
  ModelConfig c;
  if (const Json* mt = r.Find("model_type"); mt != nullptr && mt->is_string()) {
    c.model_type = mt->get<std::string>();
  }
  ASSIGN_OR_RETURN(c.hidden_size, r.PositiveInt("hidden_size"));
  ASSIGN_OR_RETURN(c.intermediate_size, r.PositiveInt("intermediate_size"));
  ASSIGN_OR_RETURN(c.num_hidden_layers, r.PositiveInt("num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_attention_heads, r.PositiveInt("num_attention_heads"));
  // HF Qwen2 treats a missing num_key_value_heads as plain multi-head attention.
  ASSIGN_OR_RETURN(c.num_key_value_heads,
                   r.PositiveInt("num_key_value_heads", c.num_attention_heads));
  ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size"));
  // The context length: every limit and cache size derives from it, so it must be given.
  ASSIGN_OR_RETURN(c.max_position_embeddings, r.PositiveInt("max_position_embeddings"));
  if (c.max_position_embeddings < 2) {
    return r.Error("max_position_embeddings ", c.max_position_embeddings,
                   " leaves no room for a prompt and a token (at least 2)");
  }
  ASSIGN_OR_RETURN(c.rms_norm_eps, r.PositiveFloat("rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.rope_theta, r.PositiveNumber("rope_theta", 10000.0));
  // RoPE's frequencies are rope_theta^(-2i/head_dim): a base below 1 inverts them, and a tiny
  // one overflows them to infinity (NaN logits). Real models use 1e4..1e7.
  if (c.rope_theta < 1.0) {
    return r.Error("rope_theta ", c.rope_theta, " is below 1 (RoPE needs a base of at least 1)");
  }

  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return r.Error("num_attention_heads ", c.num_attention_heads,
                   " is not divisible by num_key_value_heads ", c.num_key_value_heads);
  }
  if (r.Find("head_dim") != nullptr) {
    ASSIGN_OR_RETURN(c.head_dim, r.PositiveInt("head_dim"));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return r.Error("hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ",
                     c.num_attention_heads, " (and there is no head_dim field)");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) {
    return r.Error("head_dim ", c.head_dim, " is odd; rotary embeddings need an even head_dim");
  }
  if (int64_t{c.num_attention_heads} * c.head_dim > kIntMax) {
    return r.Error("num_attention_heads * head_dim is too large");
  }
  if (const Json* rs = r.Find("rope_scaling"); rs != nullptr) {
    return r.Error("'rope_scaling' ", JsonExcerpt(*rs),
                   " is not supported (only rope_scaling: null, plain RoPE)");
  }

  if (const Json* tie = r.Find("tie_word_embeddings"); tie != nullptr) {
    if (!tie->is_boolean()) return r.Error("'tie_word_embeddings' must be true or false");
    c.tie_word_embeddings = tie->get<bool>();
  }
  ASSIGN_OR_RETURN(std::optional<int64_t> bos, r.OptionalInt("bos_token_id"));
  if (bos) {
    if (*bos < 0 || *bos >= c.vocab_size) {
      return r.Error("'bos_token_id' ", *bos, " is outside the vocabulary [0, ", c.vocab_size, ")");
    }
    c.bos_token_id = static_cast<int>(*bos);
  }
  if (const Json* eos = r.Find("eos_token_id"); eos != nullptr) {
    const Json list = eos->is_array() ? *eos : Json::array({*eos});
    for (const Json& e : list) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= c.vocab_size) {
        return r.Error("'eos_token_id' ", JsonExcerpt(*eos),
                       " must be a token id or a list of token ids below vocab_size ",
                       c.vocab_size);
      }
      c.eos_token_ids.push_back(e.get<int>());
    }
  }

  RETURN_IF_ERROR(
      ParseLayerTypes(r, r.Find("layer_types"), c.model_type, c.num_hidden_layers, &c.layer_types));

  const Json* eac = r.Find("efficient_attention_config");
  if (eac != nullptr && !eac->is_object()) {
    return r.Error("'efficient_attention_config' must be an object");
  }
  if (c.has_layer_type(LayerType::kJet)) {
    if (eac == nullptr) {
      return r.Error("layer_types has jet layers but 'efficient_attention_config' is missing");
    }
    RETURN_IF_ERROR(ParseJet(r, *eac, &c.jet));
  }
  if (c.has_layer_type(LayerType::kSwa)) {
    auto swa = eac == nullptr ? Json::const_iterator() : eac->find("swa");
    if (eac == nullptr || swa == eac->end() || !swa->is_object()) {
      return r.Error("layer_types has swa layers but 'efficient_attention_config.swa' is missing");
    }
    FieldReader sr(*swa, src, "efficient_attention_config.swa.");
    ASSIGN_OR_RETURN(c.swa_window_size, sr.PositiveInt("window_size"));
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::Load(const std::string& path) {
  // A directory opens as a stream that reads nothing ("not valid JSON" would mislead).
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int e = errno;
    std::string msg = absl::StrCat(path, ": cannot read: ", std::strerror(e));
    return e == ENOENT ? absl::NotFoundError(msg) : absl::InvalidArgumentError(msg);
  }
  std::ostringstream text;
  text << in.rdbuf();
  const std::string body = text.str();
  return FromJson(body, path);
}

}  // namespace jetserve
