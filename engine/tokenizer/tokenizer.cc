// Loading tokenizer.json and the Encode/Decode pipeline: added tokens are cut out of the raw
// text first; each remaining segment is normalised (NFC), split by the pre-tokenizer regex and
// BPE-encoded piece by piece.
#include "engine/tokenizer/tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/str_util.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace jetserve {
namespace {

using nlohmann::json;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;  // also swallow whitespace on the left
  bool rstrip = false;  // also swallow whitespace on the right
  bool single_word = false;
};

// Finds added tokens in raw text: the leftmost match, and the longest one at that position
// (HF's aho-corasick LeftmostLongest). Added-token lists are short, so candidates are just
// bucketed by first byte, longest first.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  AddedTokenMatcher(const std::vector<AddedToken>& tokens, bool include_special) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i].special && !include_special) continue;
      const auto first = static_cast<unsigned char>(tokens[i].content[0]);
      buckets_[first].push_back(&tokens[i]);
      empty_ = false;
    }
    for (auto& bucket : buckets_) {
      std::stable_sort(bucket.begin(), bucket.end(), [](const AddedToken* a, const AddedToken* b) {
        return a->content.size() > b->content.size();
      });
    }
  }
  bool empty() const { return empty_; }

  struct Match {
    const AddedToken* token = nullptr;
    size_t start = 0, end = 0;  // the span removed from the text (includes stripped space)
  };

  // Searches text[from, n); `floor` is where the previous match ended (lstrip stops there).
  Match Find(std::string_view text, size_t from, size_t floor) const {
    for (size_t i = from; i < text.size(); ++i) {
      const auto& bucket = buckets_[static_cast<unsigned char>(text[i])];
      for (const AddedToken* t : bucket) {
        if (text.compare(i, t->content.size(), t->content) != 0) continue;
        const size_t end = i + t->content.size();
        if (t->single_word && (IsWordBefore(text, i) || IsWordAt(text, end))) continue;
        Match m{t, i, end};
        if (t->lstrip) {
          while (m.start > floor) {
            size_t p = m.start - 1;
            while (p > floor && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
            size_t q = p;
            if (!u_isUWhiteSpace(utf8::DecodeCodepoint(text, &q))) break;
            m.start = p;
          }
        }
        if (t->rstrip) {
          while (m.end < text.size()) {
            size_t q = m.end;
            if (!u_isUWhiteSpace(utf8::DecodeCodepoint(text, &q))) break;
            m.end = q;
          }
        }
        return m;
      }
    }
    return Match{};
  }

 private:
  static bool IsWordChar(uint32_t cp) { return cp == '_' || u_isalnum(cp); }
  static bool IsWordAt(std::string_view text, size_t pos) {
    if (pos >= text.size()) return false;
    return IsWordChar(utf8::DecodeCodepoint(text, &pos));
  }
  static bool IsWordBefore(std::string_view text, size_t pos) {
    if (pos == 0) return false;
    size_t p = pos - 1;
    while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
    return IsWordAt(text, p);
  }

  std::array<std::vector<const AddedToken*>, 256> buckets_;
  bool empty_ = true;
};

class HfBpeTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Build(const json& root,
                                                          std::string_view source);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool allow_special) const override;
  std::string TokenBytes(int32_t id) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }
  bool IsSpecial(int32_t id) const override {
    return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
  }
  int32_t TokenId(std::string_view token_content) const override;

 private:
  absl::Status EncodeSegment(std::string_view segment, std::vector<int32_t>* out) const;

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::vector<AddedToken> added_;
  absl::flat_hash_map<std::string, int32_t> added_ids_;
  // Matchers keep pointers into added_, which is never modified after Build.
  AddedTokenMatcher match_all_;      // allow_special: every added token
  AddedTokenMatcher match_regular_;  // !allow_special: only the non-special added tokens
  std::vector<std::string> bytes_;   // id -> the bytes Decode emits for it
  std::vector<bool> special_;
};

// What HF's ByteLevel decoder turns a vocabulary string into: each char mapped back to its byte;
// a string with any char outside the byte alphabet is emitted as its own UTF-8 instead.
std::string ByteLevelDecode(const std::string& token) {
  std::string out;
  if (utf8::FindInvalid(token) != std::string_view::npos) return token;
  size_t pos = 0;
  while (pos < token.size()) {
    const int b = utf8::CodepointToByte(utf8::DecodeCodepoint(token, &pos));
    if (b < 0) return token;
    out.push_back(static_cast<char>(b));
  }
  return out;
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const json& root,
                                                         std::string_view source) {
  std::vector<AddedToken> tokens;
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return tokens;
  const json& list = root["added_tokens"];
  if (!list.is_array()) return tok::FieldError(source, "added_tokens", "not an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const json& e = list[i];
    const std::string field = tok::Cat("added_tokens[", i, "]");
    if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer() ||
        e["id"].get<int64_t>() < 0 || e["id"].get<int64_t>() > tok::kMaxTokenId) {
      return tok::FieldError(source, field + ".id",
                             tok::Cat("missing, or not an integer in [0, ", tok::kMaxTokenId, "]"));
    }
    if (!e.contains("content") || !e["content"].is_string() ||
        e["content"].get_ref<const std::string&>().empty()) {
      return tok::FieldError(source, field + ".content", "missing or not a non-empty string");
    }
    AddedToken t;
    t.id = static_cast<int32_t>(e["id"].get<int64_t>());
    t.content = e["content"].get<std::string>();
    if (utf8::FindInvalid(t.content) != std::string_view::npos) {
      return tok::FieldError(source, field + ".content", "not valid UTF-8");
    }
    t.special = e.value("special", false);
    t.lstrip = e.value("lstrip", false);
    t.rstrip = e.value("rstrip", false);
    t.single_word = e.value("single_word", false);
    // `normalized` is not needed: tokens are matched in the raw text, and for Qwen2.5 they are
    // all normalized=false anyway.
    tokens.push_back(std::move(t));
  }
  return tokens;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> HfBpeTokenizer::Build(const json& root,
                                                                 std::string_view source) {
  if (!root.is_object()) return absl::InvalidArgumentError(tok::Cat(source, ": not a JSON object"));
  auto tok = std::make_unique<HfBpeTokenizer>();

  absl::StatusOr<Normalizer> normalizer =
      Normalizer::FromJson(root.value("normalizer", json()), source);
  if (!normalizer.ok()) return normalizer.status();
  tok->normalizer_ = *normalizer;

  absl::StatusOr<PreTokenizer> pre =
      PreTokenizer::FromJson(root.value("pre_tokenizer", json()), source);
  if (!pre.ok()) return pre.status();
  tok->pre_tokenizer_ = std::move(*pre);

  if (!root.contains("model")) return tok::FieldError(source, "model", "missing");
  absl::StatusOr<std::unique_ptr<BpeModel>> model = BpeModel::FromJson(root["model"], source);
  if (!model.ok()) return model.status();
  tok->model_ = std::move(*model);

  // The decoder must undo the byte-level mapping; null is taken to mean the same, since the
  // model's vocabulary is byte-level either way.
  const json decoder = root.value("decoder", json());
  if (!decoder.is_null() && decoder.value("type", "") != "ByteLevel") {
    return tok::FieldError(
        source, "decoder.type",
        tok::Cat("unsupported decoder '", decoder.value("type", ""), "' (supported: ByteLevel)"));
  }
  // post_processor is deliberately ignored: Encode adds no template tokens, and ByteLevel's
  // post-processing only adjusts offsets, which this API does not return.

  absl::StatusOr<std::vector<AddedToken>> added = ParseAddedTokens(root, source);
  if (!added.ok()) return added.status();
  tok->added_ = std::move(*added);

  int32_t limit = tok->model_->id_limit();
  for (const AddedToken& t : tok->added_) limit = std::max(limit, t.id + 1);
  tok->bytes_.resize(limit);
  tok->special_.assign(limit, false);
  for (int32_t id = 0; id < tok->model_->id_limit(); ++id) {
    if (const std::string* s = tok->model_->TokenString(id)) tok->bytes_[id] = ByteLevelDecode(*s);
  }
  for (const AddedToken& t : tok->added_) {
    tok->bytes_[t.id] = t.content;
    tok->special_[t.id] = t.special;
    tok->added_ids_[t.content] = t.id;
  }
  tok->match_all_ = AddedTokenMatcher(tok->added_, /*include_special=*/true);
  tok->match_regular_ = AddedTokenMatcher(tok->added_, /*include_special=*/false);
  return tok;
}

absl::Status HfBpeTokenizer::EncodeSegment(std::string_view segment,
                                           std::vector<int32_t>* out) const {
  if (segment.empty()) return absl::OkStatus();
  std::string scratch;
  const std::string_view normalized = normalizer_.Normalize(segment, &scratch);
  return pre_tokenizer_.Split(normalized,
                              [&](std::string_view piece) { model_->EncodeWord(piece, out); });
}

absl::StatusOr<std::vector<int32_t>> HfBpeTokenizer::Encode(std::string_view text,
                                                            bool allow_special) const {
  std::vector<int32_t> out;
  if (text.empty()) return out;
  if (const size_t bad = utf8::FindInvalid(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(tok::Cat(
        "Tokenizer::Encode: input is not valid UTF-8 (at byte ", bad, " of ", text.size(), ")"));
  }
  out.reserve(text.size() / 3 + 4);
  const AddedTokenMatcher& matcher = allow_special ? match_all_ : match_regular_;
  size_t seg_start = 0;
  if (!matcher.empty()) {
    while (seg_start < text.size()) {
      const AddedTokenMatcher::Match m = matcher.Find(text, seg_start, seg_start);
      if (m.token == nullptr) break;
      absl::Status st = EncodeSegment(text.substr(seg_start, m.start - seg_start), &out);
      if (!st.ok()) return st;
      out.push_back(m.token->id);
      seg_start = m.end;
    }
  }
  absl::Status st = EncodeSegment(text.substr(std::min(seg_start, text.size())), &out);
  if (!st.ok()) return st;
  return out;
}

std::string HfBpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= bytes_.size()) return "";
  return bytes_[id];
}

std::string HfBpeTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= bytes_.size()) continue;  // HF skips unknown ids
    if (skip_special && special_[id]) continue;
    bytes += bytes_[id];
  }
  if (utf8::FindInvalid(bytes) == std::string_view::npos) return bytes;
  std::string out;
  utf8::AppendLossy(bytes, &out);
  return out;
}

int32_t HfBpeTokenizer::TokenId(std::string_view token_content) const {
  if (auto it = added_ids_.find(tok::AbslView(token_content)); it != added_ids_.end())
    return it->second;
  return model_->IdOf(token_content);  // like HF's token_to_id: the model vocabulary next
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromJson(std::string_view json_text,
                                                                   std::string_view source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(tok::Cat(source, ": invalid JSON: ", e.what()));
  }
  try {
    return HfBpeTokenizer::Build(root, source);
  } catch (const json::exception& e) {
    // A field of the wrong JSON type deep inside (nlohmann names the type, not the field).
    return absl::InvalidArgumentError(tok::Cat(source, ": malformed tokenizer: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromDir(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(tok::Cat("cannot open tokenizer file ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::DataLossError(tok::Cat("error reading tokenizer file ", path));
  return LoadFromJson(buf.str(), path);
}

}  // namespace jetserve
