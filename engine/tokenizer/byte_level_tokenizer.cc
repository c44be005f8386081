// The tokenizer of the embedded default model: byte-level BPE over the 256 bytes alone (id ==
// byte value, no merges) plus three ChatML special tokens, written in HF's tokenizer.json format
// so that any HF-compatible loader, ours included, reads it.
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/str_util.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace jetserve {
namespace {

using ordered_json = nlohmann::ordered_json;

constexpr const char* kSpecialTokens[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
constexpr int32_t kFirstSpecialId = 256;

// ChatML, as Qwen2.5 formats conversations (without its tool-calling branches).
constexpr const char* kChatTemplate =
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}";

ordered_json ByteLevelStep() {
  return ordered_json{{"type", "ByteLevel"},
                      {"add_prefix_space", false},
                      {"trim_offsets", false},
                      {"use_regex", false}};
}

ordered_json AddedTokenJson(int32_t id, const char* content) {
  return ordered_json{{"id", id},        {"content", content}, {"single_word", false},
                      {"lstrip", false}, {"rstrip", false},    {"normalized", false},
                      {"special", true}};
}

ordered_json TokenizerJson() {
  ordered_json vocab = ordered_json::object();
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    utf8::AppendCodepoint(utf8::ByteToCodepoint(static_cast<uint8_t>(b)), &symbol);
    vocab[symbol] = b;
  }
  ordered_json added = ordered_json::array();
  for (int i = 0; i < 3; ++i)
    added.push_back(AddedTokenJson(kFirstSpecialId + i, kSpecialTokens[i]));
  ordered_json split{{"type", "Split"},
                     {"pattern", {{"Regex", std::string(kQwen2SplitPattern)}}},
                     {"behavior", "Isolated"},
                     {"invert", false}};
  return ordered_json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"}, {"pretokenizers", ordered_json::array({split, ByteLevelStep()})}}},
      {"post_processor", ByteLevelStep()},
      {"decoder", ByteLevelStep()},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", ordered_json::array()}}},
  };
}

ordered_json TokenizerConfigJson() {
  ordered_json decoder = ordered_json::object();
  for (int i = 0; i < 3; ++i) {
    ordered_json t = AddedTokenJson(kFirstSpecialId + i, kSpecialTokens[i]);
    t.erase("id");
    decoder[std::to_string(kFirstSpecialId + i)] = t;
  }
  return ordered_json{
      {"add_bos_token", false},
      {"add_prefix_space", false},
      {"added_tokens_decoder", decoder},
      {"additional_special_tokens", {"<|im_start|>", "<|im_end|>"}},
      {"bos_token", nullptr},
      {"chat_template", kChatTemplate},
      {"clean_up_tokenization_spaces", false},
      {"eos_token", "<|im_end|>"},
      {"errors", "replace"},
      {"model_max_length", 131072},
      {"pad_token", "<|endoftext|>"},
      {"split_special_tokens", false},
      {"tokenizer_class", "Qwen2Tokenizer"},
      {"unk_token", nullptr},
  };
}

absl::Status WriteJsonFile(const std::filesystem::path& path, const ordered_json& content) {
  // Write to a temporary name and rename, so that a reader never sees a half-written file.
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::InternalError(tok::Cat("cannot create ", tmp.string()));
    out << content.dump(2) << "\n";
    out.flush();
    if (!out) return absl::InternalError(tok::Cat("error writing ", tmp.string()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    return absl::InternalError(
        tok::Cat("cannot rename ", tmp.string(), " to ", path.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteByteLevelTokenizer(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(tok::Cat("cannot create directory ", dir, ": ", ec.message()));
  const std::filesystem::path root(dir);
  absl::Status st = WriteJsonFile(root / "tokenizer.json", TokenizerJson());
  if (!st.ok()) return st;
  return WriteJsonFile(root / "tokenizer_config.json", TokenizerConfigJson());
}

}  // namespace jetserve
