// Tests of the HF byte-level BPE tokenizer against the real Qwen2.5 tokenizer.json, with expected
// ids from an independent implementation (transformers.js; see tools/make_tokenizer_cases.mjs).
#include "engine/tokenizer/tokenizer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_paths.h"

namespace jetserve {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int32_t kEndOfText = 151643;
constexpr int32_t kImStart = 151644;
constexpr int32_t kImEnd = 151645;
constexpr int32_t kToolCall = 151657;  // an added token that is not special

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::vector<json> ReadJsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path, std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

// The shared Qwen2.5 tokenizer, loaded once per process.
const Tokenizer& Qwen() {
  static const Tokenizer* tok = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        Tokenizer::LoadFromDir(testing::SharedModelDir());
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->release() : nullptr;
  }();
  return *tok;
}

std::string Shorten(const std::string& s) {
  return s.size() <= 120 ? s : s.substr(0, 120) + "...(" + std::to_string(s.size()) + " bytes)";
}

// Id of the single-byte token for `b` (vocabulary strings are in GPT-2's byte alphabet).
int32_t ByteId(const Tokenizer& tok, uint8_t b) {
  std::string symbol;
  utf8::AppendCodepoint(utf8::ByteToCodepoint(b), &symbol);
  return tok.TokenId(symbol);
}

std::string Hex(const std::string& s) {
  std::string out;
  char buf[4];
  for (unsigned char c : s) {
    snprintf(buf, sizeof(buf), "%02x ", c);
    out += buf;
  }
  return out;
}

bool IsValidUtf8(const std::string& s) { return utf8::FindInvalid(s) == std::string_view::npos; }

void CheckCases(const std::vector<json>& cases) {
  const Tokenizer& tok = Qwen();
  for (const json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const bool allow_special = c.value("allow_special", true);
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, allow_special);
    ASSERT_TRUE(ids.ok()) << ids.status() << " for " << json(Shorten(text)).dump();
    EXPECT_EQ(*ids, expected) << "allow_special=" << allow_special << " text "
                              << json(Shorten(text)).dump();
    EXPECT_EQ(tok.Decode(expected, false), c["decoded"].get<std::string>())
        << json(Shorten(text)).dump();
    if (c.contains("decoded_skip_special")) {
      EXPECT_EQ(tok.Decode(expected, true), c["decoded_skip_special"].get<std::string>());
    }
  }
}

TEST(TokenizerQwen, SharedCases) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const std::vector<json> cases = ReadJsonl(testing::SharedModelDir() + "/tokenizer_cases.jsonl");
  ASSERT_FALSE(cases.empty());
  CheckCases(cases);
}

TEST(TokenizerQwen, CorpusCases) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const std::vector<json> cases =
      ReadJsonl(testing::SourceDir() + "/tests/tokenizer/corpus_cases.jsonl");
  ASSERT_GE(cases.size(), 100u);
  CheckCases(cases);
}

TEST(TokenizerQwen, BasicProperties) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  EXPECT_EQ(tok.vocab_size(), 151665);  // 151,643 BPE tokens + 22 added
  EXPECT_EQ(tok.TokenId("<|im_end|>"), kImEnd);
  EXPECT_EQ(tok.TokenId("<tool_call>"), kToolCall);
  EXPECT_EQ(tok.TokenId("no such token here"), -1);
  EXPECT_TRUE(tok.IsSpecial(kImEnd));
  EXPECT_FALSE(tok.IsSpecial(kToolCall));  // added, but special=false in tokenizer.json
  EXPECT_FALSE(tok.IsSpecial(100));
  EXPECT_FALSE(tok.IsSpecial(-1));
  EXPECT_EQ(tok.TokenBytes(kImEnd), "<|im_end|>");
  EXPECT_EQ(tok.TokenBytes(ByteId(tok, ' ')), " ");
  EXPECT_EQ(tok.TokenBytes(-1), "");
  EXPECT_EQ(tok.TokenBytes(tok.vocab_size()), "");
}

TEST(TokenizerQwen, AllowSpecialFalseTokenisesSpecialTextAsPlainText) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  EXPECT_THAT(*tok.Encode("<|im_end|>", true), ElementsAre(kImEnd));
  absl::StatusOr<std::vector<int32_t>> plain = tok.Encode("<|im_end|>", false);
  ASSERT_TRUE(plain.ok());
  EXPECT_GT(plain->size(), 1u);
  for (int32_t id : *plain) EXPECT_LT(id, kEndOfText) << "special id in plain-text encoding";
  EXPECT_EQ(tok.Decode(*plain, true), "<|im_end|>");  // nothing special to skip
  // As HF's split_special_tokens: only special tokens lose their meaning; a non-special added
  // token still matches.
  EXPECT_THAT(*tok.Encode("<tool_call>", false), ElementsAre(kToolCall));
  absl::StatusOr<std::vector<int32_t>> chat = tok.Encode("<|im_start|>user\nhi<|im_end|>", true);
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->front(), kImStart);
  EXPECT_EQ(chat->back(), kImEnd);
  EXPECT_EQ(tok.Decode(*chat, true), "user\nhi");
}

TEST(TokenizerQwen, InvalidUtf8IsRejected) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  for (const std::string& bad :
       {std::string("abc\xff"), std::string("\x80"), std::string("trunc \xe4\xb8"),
        std::string("\xc0\xaf"), std::string("\xed\xa0\x80 surrogate"),
        std::string("\xf4\x90\x80\x80"), std::string("<|im_end|>\xfe")}) {
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(bad, true);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << Hex(bad);
    EXPECT_THAT(ids.status().message(), HasSubstr("UTF-8"));
  }
  absl::StatusOr<std::vector<int32_t>> empty = tok.Encode("", true);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  EXPECT_EQ(tok.Decode({}, false), "");
}

TEST(TokenizerQwen, DecodeReplacesInvalidBytesLikeHf) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  const int32_t a = ByteId(tok, 'a');
  // A truncated character is one U+FFFD; each byte that cannot start or continue one is another.
  EXPECT_EQ(tok.Decode({ByteId(tok, 0xE4), ByteId(tok, 0xB8), a}, false),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(tok.Decode({ByteId(tok, 0xF0), ByteId(tok, 0x80)}, false), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok.Decode({ByteId(tok, 0xFF), a, ByteId(tok, 0xE4)}, false),
            "\xEF\xBF\xBD"
            "a\xEF\xBF\xBD");
  // Unknown ids are ignored, as HF does.
  EXPECT_EQ(tok.Decode({a, -5, 99999999, a}, false), "aa");
  EXPECT_EQ(tok.Decode({a, kImEnd, a}, false), "a<|im_end|>a");
  EXPECT_EQ(tok.Decode({a, kImEnd, a}, true), "aa");
  EXPECT_EQ(tok.Decode({a, kToolCall, a}, true), "a<tool_call>a");  // not special: kept
}

TEST(TokenizerQwen, LongInputs) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  // Single huge pre-tokens: a letter run (the heap merge path), whitespace runs (regex
  // backtracking in \s+(?!\S)), and a mixed megabyte.
  std::string mixed;
  while (mixed.size() < (1 << 20)) mixed += "Lorem ipsum, dolor 42 sit amet — 中文 😀\n\t ";
  for (const std::string& text :
       {std::string(200000, 'a'), std::string(1 << 20, ' '), std::string(100000, '\n') + "x",
        std::string(300000, '9'), mixed}) {
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(tok.Decode(*ids, false), text);
  }
}

TEST(TokenizerQwen, MergeVariantsAgree) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const json root = json::parse(ReadFile(testing::SharedModelDir() + "/tokenizer.json"));
  absl::StatusOr<std::unique_ptr<BpeModel>> model = BpeModel::FromJson(root["model"], "test");
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<PreTokenizer> pre = PreTokenizer::FromJson(root["pre_tokenizer"], "test");
  ASSERT_TRUE(pre.ok()) << pre.status();
  size_t pieces = 0;
  for (const json& c : ReadJsonl(testing::SourceDir() + "/tests/tokenizer/corpus_cases.jsonl")) {
    const std::string text = c["text"].get<std::string>();
    ASSERT_TRUE(pre->Split(text,
                           [&](std::string_view piece) {
                             std::vector<int32_t> small, heap;
                             (*model)->MergeWord(piece, false, &small);
                             (*model)->MergeWord(piece, true, &heap);
                             EXPECT_EQ(small, heap) << json(std::string(piece)).dump();
                             ++pieces;
                           })
                    .ok());
  }
  EXPECT_GT(pieces, 10000u);
}

TEST(TokenizerQwen, ConcurrentEncodeMatchesSingleThreaded) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  const std::vector<json> cases =
      ReadJsonl(testing::SourceDir() + "/tests/tokenizer/corpus_cases.jsonl");
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = t; i < cases.size() + t; ++i) {
          const json& c = cases[i % cases.size()];
          absl::StatusOr<std::vector<int32_t>> ids =
              tok.Encode(c["text"].get<std::string>(), c["allow_special"].get<bool>());
          if (!ids.ok() || *ids != c["ids"].get<std::vector<int32_t>>()) ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

// Streams `ids` and checks the detokenizer's contract: every delta is valid UTF-8 and the
// deltas plus Flush() equal Decode().
void CheckStream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  IncrementalDetokenizer detok(&tok, skip_special);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string delta = detok.Add(id);
    EXPECT_TRUE(IsValidUtf8(delta)) << Hex(delta);
    streamed += delta;
  }
  const std::string tail = detok.Flush();
  EXPECT_TRUE(IsValidUtf8(tail));
  streamed += tail;
  EXPECT_EQ(streamed, tok.Decode(ids, skip_special));
}

TEST(TokenizerIncremental, MultiByteCharactersSplitAcrossTokens) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  int split_tokens = 0;  // tokens whose bytes are not whole characters
  for (const std::string& text : std::vector<std::string>{
           "机器学习是人工智能的一个分支。東京は日本の首都です。", "한국어 문장입니다.",
           "Family: 👨‍👩‍👧‍👦 🧑🏿‍💻 🏳️‍🌈 🇯🇵 1️⃣ 𝄞 "
           "𠀀𠀁 "
           "𪚥",
           "<|im_start|>assistant\n😀 done<|im_end|>", "mixed ascii and ünïcödé ✓✓✓"}) {
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, true);
    ASSERT_TRUE(ids.ok());
    for (int32_t id : *ids) split_tokens += IsValidUtf8(tok.TokenBytes(id)) ? 0 : 1;
    CheckStream(tok, *ids, false);
    CheckStream(tok, *ids, true);
  }
  EXPECT_GT(split_tokens, 5) << "the texts should exercise characters split across tokens";
}

TEST(TokenizerIncremental, RandomByteStreamsMatchDecode) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  // Random mixes of single-byte tokens (often invalid UTF-8), whole-character tokens and special
  // tokens: the stream must always agree with Decode, whatever the bytes.
  std::vector<int32_t> extra = *tok.Encode("中😀", false);
  extra.push_back(kImEnd);
  extra.push_back(kToolCall);
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (int iter = 0; iter < 2000; ++iter) {
    std::vector<int32_t> ids;
    const int n = 1 + next() % 12;
    for (int i = 0; i < n; ++i) {
      const uint32_t r = next() >> 8;
      if (r % 10 == 0) {
        ids.push_back(extra[(r / 10) % extra.size()]);
      } else {
        // Bias towards bytes that form or break multi-byte characters.
        static constexpr uint8_t kBytes[] = {'a',  ' ',  0x80, 0x9F, 0xBF, 0xC2, 0xC3, 0xE0,
                                             0xE4, 0xED, 0xB8, 0xF0, 0xF4, 0x90, 0xFF, 0xC0};
        ids.push_back(ByteId(tok, kBytes[r % std::size(kBytes)]));
      }
    }
    CheckStream(tok, ids, iter % 2 == 0);
    if (HasFailure()) break;
  }
}

TEST(TokenizerIncremental, HoldsBackAndReplaces) {
  JETSERVE_REQUIRE_SHARED_MODEL();
  const Tokenizer& tok = Qwen();
  const std::string kFffd = "\xEF\xBF\xBD";
  {
    IncrementalDetokenizer d(&tok, false);  // 😀 = F0 9F 98 80, fed a byte at a time
    EXPECT_EQ(d.Add(ByteId(tok, 0xF0)), "");
    EXPECT_EQ(d.Add(ByteId(tok, 0x9F)), "");
    EXPECT_EQ(d.Add(ByteId(tok, 0x98)), "");
    EXPECT_EQ(d.Add(ByteId(tok, 0x80)), "\xF0\x9F\x98\x80");
    EXPECT_EQ(d.Flush(), "");
  }
  {
    IncrementalDetokenizer d(&tok, false);
    EXPECT_EQ(d.Add(ByteId(tok, 0x80)), kFffd);  // stray continuation byte: at once
    EXPECT_EQ(d.Add(ByteId(tok, 0xFF)), kFffd);  // can never be a lead byte: at once
    EXPECT_EQ(d.Add(ByteId(tok, 0xE4)), "");
    EXPECT_EQ(d.Add(ByteId(tok, 'a')), kFffd + "a");  // the E4 can no longer complete
    EXPECT_EQ(d.Add(ByteId(tok, 0xE4)), "");
    EXPECT_EQ(d.Add(ByteId(tok, 0xB8)), "");
    EXPECT_EQ(d.Flush(), kFffd);  // a truncated character at the end: one U+FFFD
    EXPECT_EQ(d.Flush(), "");
    EXPECT_EQ(d.Add(ByteId(tok, 'b')), "b");
  }
  {
    IncrementalDetokenizer keep(&tok, false), skip(&tok, true);
    EXPECT_EQ(keep.Add(kImEnd), "<|im_end|>");
    EXPECT_EQ(skip.Add(kImEnd), "");
    EXPECT_EQ(skip.Add(kToolCall), "<tool_call>");
  }
}

// A tokenizer.json built from the byte-level default, for tests that need a small one.
json ByteLevelJson() {
  const std::string dir = testing::ScratchDir("tokenizer_base");
  EXPECT_TRUE(WriteByteLevelTokenizer(dir).ok());
  return json::parse(ReadFile(dir + "/tokenizer.json"));
}

TEST(TokenizerByteLevel, WritesLoadableTokenizerThatRoundTrips) {
  const std::string dir = testing::ScratchDir("tokenizer_byte_level");
  ASSERT_TRUE(WriteByteLevelTokenizer(dir).ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::LoadFromDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 259);
  EXPECT_EQ((*tok)->TokenId("<|endoftext|>"), 256);
  EXPECT_EQ((*tok)->TokenId("<|im_start|>"), 257);
  EXPECT_EQ((*tok)->TokenId("<|im_end|>"), 258);
  for (int32_t id : {256, 257, 258}) EXPECT_TRUE((*tok)->IsSpecial(id));
  EXPECT_FALSE((*tok)->IsSpecial(65));
  for (const std::string& text : std::vector<std::string>{
           "Hello, world!", "  spaces\t\ttabs\r\nand newlines\n\n", "中文 한국어 العربية עברית",
           "😀👨‍👩‍👧‍👦🏳️‍🌈", "\xC3\xA9 (NFC already)",
           "I'M we'Ve 1234567890", std::string(3000, 'z')}) {
    absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text, false);
    ASSERT_TRUE(ids.ok());
    std::vector<int32_t> bytes(text.begin(), text.end());
    for (int32_t& b : bytes) b &= 0xFF;
    EXPECT_EQ(*ids, bytes) << "id == byte value";
    EXPECT_EQ((*tok)->Decode(*ids, false), text);
  }
  EXPECT_THAT(*(*tok)->Encode("<|im_start|>a<|im_end|><|endoftext|>", true),
              ElementsAre(257, 'a', 258, 256));
  EXPECT_EQ((*tok)->Encode("<|im_end|>", false)->size(), 10u);
  EXPECT_EQ((*tok)->Decode(*(*tok)->Encode("e\xCC\x81", true), false), "\xC3\xA9");  // NFC

  const json config = json::parse(ReadFile(dir + "/tokenizer_config.json"));
  EXPECT_EQ(config["eos_token"], "<|im_end|>");
  EXPECT_EQ(config["pad_token"], "<|endoftext|>");
  const std::string tmpl = config["chat_template"].get<std::string>();
  EXPECT_THAT(tmpl, HasSubstr("You are a helpful assistant."));
  EXPECT_THAT(tmpl, HasSubstr("<|im_start|>assistant\\n"));
  EXPECT_THAT(tmpl, HasSubstr("add_generation_prompt"));
}

TEST(TokenizerByteLevel, MergesInBothFormsAndStrippedAddedTokens) {
  json root = ByteLevelJson();
  root["model"]["vocab"]["ab"] = 300;
  root["model"]["vocab"]["abc"] = 301;
  root["added_tokens"].push_back({{"id", 302},
                                  {"content", "<mask>"},
                                  {"special", true},
                                  {"lstrip", true},
                                  {"rstrip", true},
                                  {"normalized", false},
                                  {"single_word", false}});
  for (const json& merges : {json::array({"a b", "ab c"}),
                             json::array({json::array({"a", "b"}), json::array({"ab", "c"})})}) {
    root["model"]["merges"] = merges;
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::LoadFromJson(root.dump(), "t.json");
    ASSERT_TRUE(tok.ok()) << tok.status();
    EXPECT_THAT(*(*tok)->Encode("abcab", false), ElementsAre(301, 300));
    EXPECT_THAT(*(*tok)->Encode("x  <mask>  y", true), ElementsAre('x', 302, 'y'));
    EXPECT_EQ((*tok)->vocab_size(), 303);
  }
}

absl::Status LoadError(const json& root) {
  return Tokenizer::LoadFromJson(root.dump(), "/models/x/tokenizer.json").status();
}

TEST(TokenizerLoad, ErrorsNameTheFileAndField) {
  {
    const std::string dir = testing::ScratchDir("tokenizer_missing");
    absl::Status st = Tokenizer::LoadFromDir(dir).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(st.message(), HasSubstr(dir + "/tokenizer.json"));
  }
  {
    const std::string dir = testing::ScratchDir("tokenizer_bad_json");
    std::ofstream(dir + "/tokenizer.json") << "{\"model\": {\"type\": ";
    absl::Status st = Tokenizer::LoadFromDir(dir).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr(dir + "/tokenizer.json"));
    EXPECT_THAT(st.message(), HasSubstr("invalid JSON"));
  }
  const json base = ByteLevelJson();
  ASSERT_TRUE(Tokenizer::LoadFromJson(base.dump(), "x").ok());
  struct Case {
    const char* pointer;
    json value;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"/model/type", "WordPiece", "field 'model.type': unsupported model type 'WordPiece'"},
      {"/normalizer", {{"type", "NFKC"}}, "field 'normalizer.type'"},
      {"/pre_tokenizer", {{"type", "Metaspace"}}, "field 'pre_tokenizer.type'"},
      {"/pre_tokenizer/pretokenizers/0/behavior", "Removed", "pretokenizers[0].behavior"},
      {"/pre_tokenizer/pretokenizers/0/pattern/Regex", "(unclosed", "cannot compile regex"},
      {"/decoder", {{"type", "WordPiece"}}, "field 'decoder.type'"},
      {"/model/merges", json::array({"a q"}), "field 'model.merges[0]'"},
      {"/model/merges", json::array({"abc"}), "field 'model.merges[0]'"},
      {"/model/vocab", json::array(), "field 'model.vocab'"},
      {"/added_tokens/0/content", 5, "field 'added_tokens[0].content'"},
      {"/model/end_of_word_suffix", "</w>", "field 'model.end_of_word_suffix'"},
      // Ids index tables: one near INT32_MAX would ask for billions of entries (bad_alloc).
      {"/added_tokens/0/id", 2000000000, "field 'added_tokens[0].id': missing, or not an integer"},
      {"/model/vocab/zz", 2147483646, "id of 'zz' is not an integer in [0, 16777215]"},
  };
  for (const Case& c : cases) {
    json root = base;
    root[json::json_pointer(c.pointer)] = c.value;
    absl::Status st = LoadError(root);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.pointer;
    EXPECT_THAT(st.message(), HasSubstr("/models/x/tokenizer.json")) << c.pointer;
    EXPECT_THAT(st.message(), HasSubstr(c.expected)) << c.pointer;
  }
  json no_model = base;
  no_model.erase("model");
  EXPECT_THAT(LoadError(no_model).message(), HasSubstr("field 'model'"));
}

TEST(TokenizerLoad, PlainByteLevelPreTokenizerUsesGpt2Regex) {
  json root = ByteLevelJson();
  root["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  root["model"]["vocab"]["Ġa"] = 300;
  root["model"]["vocab"]["aa"] = 301;
  root["model"]["vocab"]["12"] = 302;
  root["model"]["merges"] = json::array({"Ġ a", "a a", "1 2"});
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::LoadFromJson(root.dump(), "t.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // GPT-2 splits " aaaa" as one piece (" ?\p{L}+"): Ġa, aa, a.
  EXPECT_THAT(*(*tok)->Encode(" aaaa", false), ElementsAre(300, 301, 'a'));
  // GPT-2 keeps digit runs together (" ?\p{N}+"); Qwen's pattern would split them.
  EXPECT_THAT(*(*tok)->Encode("12", false), ElementsAre(302));
  root["pre_tokenizer"]["add_prefix_space"] = true;
  tok = Tokenizer::LoadFromJson(root.dump(), "t.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(*(*tok)->Encode("aaaa", false), ElementsAre(300, 301, 'a'));
}

}  // namespace
}  // namespace jetserve
