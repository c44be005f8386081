#include "engine/checkpoint/safetensors.h"

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/checkpoint/checkpoint_test_util.h"
#include "tests/test_paths.h"

namespace jetserve {
namespace {

using kernels::DType;
using ::testing::HasSubstr;
using testing::ReadBytes;
using testing::ScratchDir;

TEST(CheckpointSafetensorsTest, RoundTripMixedDtypesAligned) {
  const std::string path = ScratchDir("st_roundtrip") + "/t.safetensors";
  const std::vector<uint16_t> a = {0x3f80, 0x4000, 0xc040};  // bf16 1, 2, -3: odd count
  const std::vector<float> b = {0.5f, -1.25f, 3.0f, 4.0f};
  const std::vector<uint16_t> c = {0x3c00};  // f16 1.0
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"a", DType::kBF16, {3}, a.data()},
                                {"b", DType::kF32, {2, 2}, b.data()},
                                {"c", DType::kF16, {1, 1}, c.data()},
                                {"empty", DType::kF32, {0, 5}, nullptr}},
                               {{"format", "pt"}})
                  .ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->data_offset() % 64, 0);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  ASSERT_EQ((*f)->entries().size(), 4u);
  // The F32 tensors moved first (stable), so that "b" stays 4-aligned after the odd bf16 "a".
  EXPECT_EQ((*f)->Find("b")->begin, 0);
  EXPECT_EQ((*f)->Find("empty")->begin, 16);
  EXPECT_EQ((*f)->Find("a")->begin, 16);
  EXPECT_EQ((*f)->Find("c")->begin, 22);
  const SafetensorsEntry* eb = (*f)->Find("b");
  ASSERT_NE(eb, nullptr);
  EXPECT_EQ(eb->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(eb->dtype, DType::kF32);
  EXPECT_EQ(std::memcmp(eb->data, b.data(), 16), 0);
  const SafetensorsEntry* ea = (*f)->Find("a");
  EXPECT_EQ(kernels::LoadAsFloat(ea->data, DType::kBF16, 2), -3.0f);
  EXPECT_EQ(kernels::LoadAsFloat((*f)->Find("c")->data, DType::kF16, 0), 1.0f);
  EXPECT_EQ((*f)->Find("empty")->nbytes(), 0);
  EXPECT_EQ((*f)->Find("nope"), nullptr);
  // The header is plain JSON that other readers accept, padded with spaces.
  const std::string bytes = ReadBytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.back(), ' ');
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json({0, 16}));
  EXPECT_EQ(j["a"]["dtype"], "BF16");
}

TEST(CheckpointSafetensorsTest, StreamingWriterChecksByteCount) {
  const std::string dir = ScratchDir("st_stream");
  const std::string path = dir + "/s.safetensors";
  {
    auto w = SafetensorsWriter::Open(path, {{"x", DType::kF32, {4}, nullptr}}, {});
    ASSERT_TRUE(w.ok()) << w.status();
    const float v[4] = {1, 2, 3, 4};
    ASSERT_TRUE((*w)->Append(v, 8).ok());
    EXPECT_FALSE((*w)->Append(v, 12).ok());  // more than declared
    absl::Status s = (*w)->Close();
    EXPECT_THAT(std::string(s.message()), HasSubstr("8 bytes of tensor data written, 16 declared"));
  }
  // Nothing half-written is left behind.
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  {
    auto w = SafetensorsWriter::Open(path, {{"x", DType::kF32, {4}, nullptr}}, {});
    ASSERT_TRUE(w.ok());
    const float v[4] = {1, 2, 3, 4};
    ASSERT_TRUE((*w)->Append(v, 4).ok());
    ASSERT_TRUE((*w)->Append(v + 1, 12).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(kernels::LoadAsFloat((*f)->Find("x")->data, DType::kF32, 3), 4.0f);
}

TEST(CheckpointSafetensorsTest, WriterRejectsBadInput) {
  const std::string path = ScratchDir("st_bad_writer") + "/s.safetensors";
  auto w = SafetensorsWriter::Open(
      path, {{"a", DType::kBF16, {1}, nullptr}, {"b", DType::kF32, {1}, nullptr}}, {});
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("'b' (F32) would start at unaligned"));
  w = SafetensorsWriter::Open(
      path, {{"a", DType::kF32, {1}, nullptr}, {"a", DType::kF32, {1}, nullptr}}, {});
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("duplicate tensor 'a'"));
  w = SafetensorsWriter::Open(path, {{"a", DType::kF32, {-1}, nullptr}}, {});
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("invalid shape [-1]"));
  EXPECT_FALSE(WriteSafetensors(path, {{"a", DType::kF32, {2}, nullptr}}, {}).ok());
}

TEST(CheckpointSafetensorsTest, OpenMissingFile) {
  auto f = SafetensorsFile::Open("/nonexistent/x.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::IsNotFound(f.status()));
  EXPECT_THAT(std::string(f.status().message()),
              HasSubstr("/nonexistent/x.safetensors: cannot open"));
}

}  // namespace
}  // namespace jetserve
