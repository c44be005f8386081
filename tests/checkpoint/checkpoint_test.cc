// Checkpoint::Open on hand-written checkpoints: known values in every dtype, and one test per
// kind of broken checkpoint, checking that the error names the file and the tensor.
#include "engine/checkpoint/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/checkpoint/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "tests/checkpoint/checkpoint_test_util.h"
#include "tests/test_paths.h"

namespace jetserve {
namespace {

namespace fs = std::filesystem;
using kernels::DType;
using ::testing::HasSubstr;
using testing::ReadBytes;
using testing::ScratchDir;
using testing::TinyConfig;
using testing::WriteText;

constexpr DType kDTypes[] = {DType::kBF16, DType::kF16, DType::kF32};

// Element i of the k-th expected tensor: multiples of 1/16 in [-15/16, 15/16], exact in all three
// dtypes, and different between neighbouring tensors.
float KnownValue(int k, int64_t i) { return static_cast<float>((i * 7 + k * 3) % 31 - 15) / 16.0f; }

// Exact for the normal values KnownValue produces (|v| >= 1/16, 4 mantissa bits) and zero.
uint16_t ExactFloatToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  if ((bits & 0x7fffffffu) == 0) return sign;
  const uint32_t exp = ((bits >> 23) & 0xffu) - 127 + 15;
  return static_cast<uint16_t>(sign | (exp << 10) | ((bits >> 13) & 0x3ffu));
}

std::string Encode(DType t, int k, int64_t n) {
  std::string out(static_cast<size_t>(n) * kernels::DTypeSize(t), '\0');
  for (int64_t i = 0; i < n; ++i) {
    const float v = KnownValue(k, i);
    if (t == DType::kF32) {
      std::memcpy(&out[i * 4], &v, 4);
    } else {
      const uint16_t h = t == DType::kBF16 ? kernels::FloatToBf16(v) : ExactFloatToF16(v);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

struct KnownTensor {
  int k;  // position in ExpectedTensors, selects values and dtype
  SafetensorsTensor spec;
  std::string bytes;
};

// The expected tensors of `config` with known values; tensor k stored as kDTypes[k % 3].
std::vector<KnownTensor> KnownTensors(const nlohmann::json& config) {
  auto c = ModelConfig::FromJson(config.dump(), "config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  std::vector<KnownTensor> out;
  int k = 0;
  for (const ExpectedTensor& e : ExpectedTensors(*c)) {
    KnownTensor t{k, {e.name, kDTypes[k % 3], e.shape, nullptr}, ""};
    ++k;
    out.push_back(std::move(t));
  }
  return out;
}

// Writes config.json plus the tensors (as one file, or split into `shards` files with an index).
void WriteKnown(const std::string& dir, const nlohmann::json& config,
                std::vector<KnownTensor> tensors, int shards = 1) {
  WriteText(dir + "/config.json", config.dump(2));
  for (KnownTensor& t : tensors) {
    int64_t n = 1;
    for (int64_t d : t.spec.shape) n *= d;
    t.bytes = Encode(t.spec.dtype, t.k, n);
    t.spec.data = t.bytes.data();
  }
  nlohmann::json weight_map = nlohmann::json::object();
  const size_t per = (tensors.size() + shards - 1) / shards;
  for (int s = 0; s < shards; ++s) {
    std::vector<SafetensorsTensor> specs;
    const std::string name =
        shards == 1 ? "model.safetensors" : "part-" + std::to_string(s) + ".safetensors";
    for (size_t i = s * per; i < std::min(tensors.size(), (s + 1) * per); ++i) {
      specs.push_back(tensors[i].spec);
      weight_map[tensors[i].spec.name] = name;
    }
    ASSERT_TRUE(WriteSafetensors(dir + "/" + name, specs, {{"format", "pt"}}).ok());
  }
  if (shards > 1) {
    WriteText(dir + "/model.safetensors.index.json",
              nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
  }
}

void ExpectKnownValues(const Checkpoint& ckpt, const nlohmann::json& config) {
  std::map<std::string, KnownTensor> want;
  for (KnownTensor& t : KnownTensors(config)) want.emplace(t.spec.name, t);
  const std::vector<TensorView> views = testing::AllViews(ckpt.weights());
  // All expected tensors, plus lm_head appearing a second time when tied.
  EXPECT_EQ(views.size(), want.size() + (ckpt.config().tie_word_embeddings ? 1 : 0));
  int64_t bytes = 0;
  for (const TensorView& v : views) {
    auto it = want.find(v.name);
    ASSERT_NE(it, want.end()) << v.name;
    const KnownTensor& t = it->second;
    EXPECT_EQ(v.shape, t.spec.shape) << v.name;
    EXPECT_EQ(v.dtype, t.spec.dtype) << v.name;
    for (int64_t i = 0; i < v.numel(); ++i) {
      ASSERT_EQ(v.at(i), KnownValue(t.k, i)) << v.name << "[" << i << "]";
    }
    bytes += v.numel() * kernels::DTypeSize(v.dtype);
  }
  if (ckpt.config().tie_word_embeddings) {
    EXPECT_EQ(ckpt.weights().lm_head.data, ckpt.weights().embed_tokens.data);
    bytes -=
        ckpt.weights().embed_tokens.numel() * kernels::DTypeSize(ckpt.weights().embed_tokens.dtype);
  }
  EXPECT_EQ(ckpt.weight_bytes(), bytes);
}

TEST(CheckpointOpenTest, KnownValuesInAllDTypes) {
  const std::string dir = ScratchDir("ckpt_known");
  const nlohmann::json config = TinyConfig();
  WriteKnown(dir, config, KnownTensors(config));
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectKnownValues(**ckpt, config);
  const ModelWeights& w = (*ckpt)->weights();
  ASSERT_EQ(w.layers.size(), 4u);
  // Jet layer: jet fields present, attention biases absent; attention layer the reverse.
  EXPECT_TRUE(w.layers[0].conv_w2.present());
  EXPECT_EQ(w.layers[0].conv_w2.shape, (std::vector<int64_t>{256, 8}));
  EXPECT_EQ(w.layers[0].o_norm.shape, (std::vector<int64_t>{32}));
  EXPECT_EQ(w.layers[0].o_proj.shape, (std::vector<int64_t>{48, 64}));
  EXPECT_FALSE(w.layers[0].q_bias.present());
  EXPECT_EQ(w.layers[0].q_bias.numel(), 0);
  EXPECT_TRUE(w.layers[2].k_bias.present());
  EXPECT_EQ(w.layers[2].k_proj.shape, (std::vector<int64_t>{24, 48}));
  EXPECT_FALSE(w.layers[2].g_proj.present());
}

TEST(CheckpointOpenTest, UntiedHasOwnLmHead) {
  const std::string dir = ScratchDir("ckpt_untied");
  nlohmann::json config = TinyConfig();
  config["tie_word_embeddings"] = false;
  WriteKnown(dir, config, KnownTensors(config));
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectKnownValues(**ckpt, config);
  EXPECT_EQ((*ckpt)->weights().lm_head.name, "lm_head.weight");
  EXPECT_NE((*ckpt)->weights().lm_head.data, (*ckpt)->weights().embed_tokens.data);
}

TEST(CheckpointOpenTest, ShardedWithIndexAndExtraTensors) {
  const std::string dir = ScratchDir("ckpt_known_sharded");
  const nlohmann::json config = TinyConfig();
  std::vector<KnownTensor> tensors = KnownTensors(config);
  // Extra tensors (e.g. rotary inv_freq buffers some exporters keep) are ignored.
  tensors.push_back(
      {0, {"model.layers.1.self_attn.rotary_emb.inv_freq", DType::kF32, {6}, nullptr}, ""});
  WriteKnown(dir, config, tensors, /*shards=*/3);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectKnownValues(**ckpt, config);
}

// ---------------------------------------------------------------------------------------------
// Broken checkpoints: each error is one message naming the file (and tensor, where one is
// involved).

class CheckpointBadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ScratchDir(std::string("ckpt_bad_") +
                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
    file_ = dir_ + "/model.safetensors";
  }
  void WriteGood() { WriteKnown(dir_, TinyConfig(), KnownTensors(TinyConfig())); }
  std::string OpenError() {
    auto ckpt = Checkpoint::Open(dir_);
    return ckpt.ok() ? "OK" : std::string(ckpt.status().message());
  }
  // A checkpoint whose model.safetensors holds exactly this header and data.
  void WriteRaw(const std::string& header, const std::string& data) {
    WriteText(dir_ + "/config.json", TinyConfig().dump());
    WriteText(file_, testing::RawSafetensors(header, data));
  }
  std::string dir_, file_;
};

TEST_F(CheckpointBadTest, MissingConfig) {
  EXPECT_THAT(OpenError(), HasSubstr(dir_ + "/config.json: cannot read"));
}

TEST_F(CheckpointBadTest, InvalidConfigJson) {
  WriteText(dir_ + "/config.json", "{\"hidden_size\": 48,,}");
  EXPECT_EQ(OpenError(), dir_ + "/config.json: not valid JSON");
}

TEST_F(CheckpointBadTest, UnknownLayerType) {
  nlohmann::json c = TinyConfig();
  c["layer_types"][3] = "mamba2";
  WriteText(dir_ + "/config.json", c.dump());
  EXPECT_EQ(OpenError(), dir_ +
                             "/config.json: unknown layer type 'mamba2' at layer_types[3] "
                             "(supported: attn, swa, jet)");
}

TEST_F(CheckpointBadTest, LayerTypesLengthMismatch) {
  nlohmann::json c = TinyConfig();
  c["num_hidden_layers"] = 5;
  WriteText(dir_ + "/config.json", c.dump());
  EXPECT_EQ(OpenError(),
            dir_ + "/config.json: 'layer_types' has 4 entries but num_hidden_layers is 5");
}

TEST_F(CheckpointBadTest, NonIntegerDv) {
  nlohmann::json c = TinyConfig();
  c["efficient_attention_config"]["jet"]["expand_v"] = 2.5001;
  WriteText(dir_ + "/config.json", c.dump());
  EXPECT_THAT(OpenError(), HasSubstr(dir_ + "/config.json: efficient_attention_config.jet: "
                                            "head_dim 12 * expand_v 2.5001"));
}

TEST_F(CheckpointBadTest, MissingWeights) {
  WriteText(dir_ + "/config.json", TinyConfig().dump());
  EXPECT_THAT(OpenError(), HasSubstr(file_ + ": not found"));
}

TEST_F(CheckpointBadTest, TruncatedFile) {
  WriteGood();
  const std::string bytes = ReadBytes(file_);
  WriteText(file_, bytes.substr(0, bytes.size() - 10));
  // The last tensor in the file no longer fits.
  EXPECT_THAT(OpenError(), HasSubstr(file_ + ": tensor 'model.norm.weight': data_offsets"));
  EXPECT_THAT(OpenError(), HasSubstr("outside the data region"));
  WriteText(file_, bytes.substr(0, 5));
  EXPECT_EQ(OpenError(), file_ + ": file is 5 bytes, too small for a safetensors header");
}

TEST_F(CheckpointBadTest, HeaderLengthPastEof) {
  WriteGood();
  std::string bytes = ReadBytes(file_);
  const uint64_t huge = uint64_t{1} << 62;
  std::memcpy(bytes.data(), &huge, 8);  // little-endian host
  WriteText(file_, bytes);
  EXPECT_THAT(OpenError(), HasSubstr(file_ + ": header length 4611686018427387904 exceeds the "
                                             "file size"));
}

TEST_F(CheckpointBadTest, CorruptHeaderJson) {
  WriteGood();
  std::string bytes = ReadBytes(file_);
  bytes[8 + 30] = '\x01';
  WriteText(file_, bytes);
  EXPECT_EQ(OpenError(), file_ + ": header is not valid JSON");
  WriteRaw("[1,2,3]", "");
  EXPECT_EQ(OpenError(), file_ + ": header is not a JSON object");
}

TEST_F(CheckpointBadTest, DataOffsetsOutOfRange) {
  WriteRaw(R"({"model.norm.weight":{"dtype":"F32","shape":[2000],"data_offsets":[0,8000]}})",
           std::string(64, '\0'));
  EXPECT_EQ(OpenError(), file_ +
                             ": tensor 'model.norm.weight': data_offsets [0, 8000] lie "
                             "outside the data region (64 bytes); the file is truncated or "
                             "corrupt");
  WriteRaw(R"({"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
           std::string(64, '\0'));
  EXPECT_THAT(OpenError(), HasSubstr("tensor 'model.norm.weight': invalid data_offsets [8,0]"));
  WriteRaw(R"({"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})",
           std::string(64, '\0'));
  EXPECT_THAT(OpenError(), HasSubstr("tensor 'model.norm.weight': invalid data_offsets"));
}

TEST_F(CheckpointBadTest, SizeShapeMismatchInHeader) {
  WriteRaw(R"({"model.norm.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,32]}})",
           std::string(64, '\0'));
  EXPECT_EQ(OpenError(), file_ +
                             ": tensor 'model.norm.weight': shape [4, 4] of F32 needs 64 "
                             "bytes but data_offsets span 32");
}

TEST_F(CheckpointBadTest, NegativeOrOverflowingShape) {
  WriteRaw(R"({"model.norm.weight":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})",
           std::string(64, '\0'));
  EXPECT_THAT(OpenError(), HasSubstr(file_ + ": tensor 'model.norm.weight': shape [-4] has a "
                                             "dimension that is not a non-negative integer"));
  // 2^32 * 2^32 * 4 bytes wraps to 0 in 64-bit arithmetic: must not be taken for an empty tensor.
  WriteRaw(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "");
  EXPECT_THAT(OpenError(), HasSubstr("tensor 't': shape [4294967296, 4294967296] of F32 needs "
                                     "more than 2^63 bytes"));
  WriteRaw(R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]}})", "");
  EXPECT_THAT(OpenError(), HasSubstr("tensor 't': shape [1.5]"));
  WriteRaw(R"({"t":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,0]}})", "");
  EXPECT_THAT(OpenError(), HasSubstr("tensor 't': shape"));
}

// A header's name or value can be megabytes long: errors quote a bounded excerpt.
TEST_F(CheckpointBadTest, LongNamesAndValuesAreCutInErrors) {
  std::string shape = "[1.5";
  for (int i = 0; i < 50000; ++i) shape += ",1";
  shape += "]";
  const std::string name(100000, 'n');
  WriteRaw(R"({")" + name + R"(":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,0]}})",
           "");
  const std::string error = OpenError();
  EXPECT_THAT(error, HasSubstr("tensor 'nnnn"));
  EXPECT_THAT(error, HasSubstr("... (100000 bytes)': shape [1.5,1,1,"));
  EXPECT_THAT(error, HasSubstr("... (100005 characters) has a dimension"));
  EXPECT_LT(error.size(), file_.size() + 500);
}

TEST_F(CheckpointBadTest, MissingHeaderFields) {
  WriteRaw(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0'));
  EXPECT_EQ(OpenError(), file_ + ": tensor 't': missing string 'dtype'");
  WriteRaw(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", std::string(8, '\0'));
  EXPECT_EQ(OpenError(), file_ + ": tensor 't': missing array 'shape'");
  WriteRaw(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", std::string(8, '\0'));
  EXPECT_EQ(OpenError(), file_ + ": tensor 't': 'data_offsets' must be an array [begin, end]");
  WriteRaw(R"({"t":7})", "");
  EXPECT_EQ(OpenError(), file_ + ": tensor 't': header entry is not an object");
}

TEST_F(CheckpointBadTest, MisalignedData) {
  // Pad the header so that the data region starts 8-aligned; then offset 2 is misaligned for F32.
  std::string header = R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})";
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  WriteRaw(header, std::string(8, '\0'));
  EXPECT_THAT(OpenError(), HasSubstr(file_ + ": tensor 't': data at file offset"));
  EXPECT_THAT(OpenError(), HasSubstr("is not aligned to its element size 4"));
}

TEST_F(CheckpointBadTest, WrongShapeForConfig) {
  std::vector<KnownTensor> tensors = KnownTensors(TinyConfig());
  for (KnownTensor& t : tensors) {
    if (t.spec.name == "model.layers.1.self_attn.q_proj.weight") t.spec.shape = {48, 32};
  }
  WriteKnown(dir_, TinyConfig(), tensors);
  EXPECT_EQ(OpenError(), file_ +
                             ": tensor 'model.layers.1.self_attn.q_proj.weight' has shape "
                             "[48, 32], expected [48, 48]");
}

TEST_F(CheckpointBadTest, UnsupportedDtype) {
  std::vector<KnownTensor> tensors = KnownTensors(TinyConfig());
  const std::string name = "model.layers.0.self_attn.A_log";
  for (KnownTensor& t : tensors) {
    if (t.spec.name == name) t.spec.dtype = DType::kF32;
  }
  WriteKnown(dir_, TinyConfig(), tensors);
  // Relabel it in place as I32 (same width, so offsets stay valid).
  std::string bytes = ReadBytes(file_);
  const std::string key = "\"" + name + "\":{\"dtype\":\"F32\"";
  const size_t pos = bytes.find(key);
  ASSERT_NE(pos, std::string::npos);
  bytes[pos + key.size() - 4] = 'I';
  WriteText(file_, bytes);
  EXPECT_EQ(OpenError(), file_ + ": tensor '" + name +
                             "' has unsupported dtype I32 (supported: BF16, F16, F32)");
}

// The format packs tensors back to back over the whole data region; anything else would let two
// tensors share bytes (or leave bytes to none) without a word.
TEST_F(CheckpointBadTest, TensorsMustBePackedBackToBack) {
  const std::string eight(8, '\0');
  WriteRaw(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
           R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
           eight.substr(0, 4));
  EXPECT_THAT(OpenError(), HasSubstr("data_offsets [0, 4] overlap the tensor before"));
  WriteRaw(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
           R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
           eight + eight.substr(0, 4));
  EXPECT_THAT(OpenError(), HasSubstr("data_offsets [8, 12] leave a gap after the tensor before"));
  WriteRaw(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", eight);
  EXPECT_THAT(OpenError(), HasSubstr("leave a gap"));
  WriteRaw(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", eight);
  EXPECT_THAT(OpenError(), HasSubstr("the tensors end at byte 4 of a 8-byte data region"));
  // Zero-size tensors take no bytes, wherever they sit between the others.
  WriteRaw(R"({"z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},)"
           R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
           R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
           eight);
  EXPECT_TRUE(SafetensorsFile::Open(file_).ok());
}

TEST_F(CheckpointBadTest, UnknownDtypeOfUnusedTensorIsFine) {
  // A sub-byte dtype in an unused tensor: its size cannot be checked, and it is never read.
  WriteRaw(R"({"t":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", std::string(2, '\0'));
  auto file = SafetensorsFile::Open(file_);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_NE((*file)->Find("t"), nullptr);
  EXPECT_FALSE((*file)->Find("t")->dtype.has_value());
  EXPECT_EQ((*file)->Find("t")->dtype_name, "F4");
}

TEST_F(CheckpointBadTest, MissingTensor) {
  std::vector<KnownTensor> tensors = KnownTensors(TinyConfig());
  std::erase_if(tensors, [](const KnownTensor& t) {
    return t.spec.name == "model.layers.3.mlp.up_proj.weight";
  });
  WriteKnown(dir_, TinyConfig(), tensors);
  EXPECT_EQ(OpenError(), file_ + ": tensor 'model.layers.3.mlp.up_proj.weight' is missing");
}

TEST_F(CheckpointBadTest, UntiedWithoutLmHead) {
  nlohmann::json config = TinyConfig();
  config["tie_word_embeddings"] = false;
  WriteKnown(dir_, config, KnownTensors(TinyConfig()));
  EXPECT_EQ(OpenError(), file_ + ": tensor 'lm_head.weight' is missing");
}

TEST_F(CheckpointBadTest, IndexNamesMissingShard) {
  WriteKnown(dir_, TinyConfig(), KnownTensors(TinyConfig()), /*shards=*/2);
  fs::remove(dir_ + "/part-1.safetensors");
  const std::string err = OpenError();
  EXPECT_THAT(err, HasSubstr(dir_ + "/model.safetensors.index.json: shard 'part-1.safetensors' "
                                    "(holding tensor '"));
  EXPECT_THAT(err, HasSubstr(dir_ + "/part-1.safetensors: cannot open: No such file"));
}

TEST_F(CheckpointBadTest, IndexProblems) {
  WriteKnown(dir_, TinyConfig(), KnownTensors(TinyConfig()), /*shards=*/2);
  const std::string index = dir_ + "/model.safetensors.index.json";
  nlohmann::json j = nlohmann::json::parse(ReadBytes(index));
  j["weight_map"].erase("model.layers.2.self_attn.v_proj.bias");
  WriteText(index, j.dump());
  EXPECT_EQ(OpenError(),
            index + ": tensor 'model.layers.2.self_attn.v_proj.bias' is missing from weight_map");
  // weight_map points at the wrong shard.
  j["weight_map"]["model.layers.2.self_attn.v_proj.bias"] = "part-0.safetensors";
  j["weight_map"]["model.norm.weight"] = "part-0.safetensors";
  WriteText(index, j.dump());
  EXPECT_THAT(OpenError(), HasSubstr(dir_ + "/part-0.safetensors: tensor '"));
  EXPECT_THAT(OpenError(), HasSubstr("' is missing"));
  j["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  WriteText(index, j.dump());
  EXPECT_THAT(OpenError(), HasSubstr(index + ": weight_map entry for tensor 'model.norm.weight' "
                                             "names an invalid shard"));
  WriteText(index, "{\"weight_map\": ");
  EXPECT_EQ(OpenError(), index + ": not a valid JSON object");
  WriteText(index, "{\"metadata\": {}}");
  EXPECT_EQ(OpenError(), index + ": missing object 'weight_map'");
}

// Random corruption of a valid file's header and length: Open must fail cleanly or succeed,
// never crash or read outside the mapping (run under ASan to make the latter visible).
TEST_F(CheckpointBadTest, RandomCorruptionNeverCrashes) {
  WriteGood();
  const std::string good = ReadBytes(file_);
  std::mt19937_64 rng(1234);
  int failures = 0;
  for (int iter = 0; iter < 300; ++iter) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t pos = rng() % std::min<size_t>(bytes.size(), 2000);
      bytes[pos] = static_cast<char>(rng());
    }
    if (iter % 3 == 0) bytes.resize(rng() % bytes.size());
    WriteText(file_, bytes);
    auto ckpt = Checkpoint::Open(dir_);
    if (!ckpt.ok()) {
      ++failures;
      EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr(dir_)) << iter;
    }
  }
  EXPECT_GT(failures, 200);
}

}  // namespace
}  // namespace jetserve
