#include "engine/tokenizer/bpe_model.h"

#include <algorithm>
#include <climits>
#include <queue>

#include "absl/hash/hash.h"
#include "engine/tokenizer/str_util.h"
#include "engine/tokenizer/utf8.h"

namespace jetserve {
namespace {

// Words up to this many symbols use the array scan (no heap, no links): nearly every
// pre-token of natural text is this short, and a linear scan over a few ints beats a heap.
constexpr size_t kSmallWordSymbols = 48;

// A vocabulary string in the byte-unicode alphabet -> the single byte it stands for, or -1.
int SingleByteOf(const std::string& token) {
  if (token.empty() || utf8::FindInvalid(token) != std::string_view::npos) return -1;
  size_t pos = 0;
  const uint32_t cp = utf8::DecodeCodepoint(token, &pos);
  if (pos != token.size()) return -1;
  return utf8::CodepointToByte(cp);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& model,
                                                             std::string_view source) {
  if (!model.is_object()) return tok::FieldError(source, "model", "missing or not an object");
  const std::string type =
      model.contains("type") && model["type"].is_string() ? model["type"].get<std::string>() : "";
  if (type != "BPE") {
    return tok::FieldError(source, "model.type",
                           tok::Cat("unsupported model type '", type, "' (supported: BPE)"));
  }
  std::unique_ptr<BpeModel> m(new BpeModel());
  std::fill(std::begin(m->byte_to_id_), std::end(m->byte_to_id_), -1);

  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() &&
        !(model[key].is_string() && model[key].get<std::string>().empty())) {
      return tok::FieldError(source, tok::Cat("model.", key),
                             "non-empty values are not supported for byte-level BPE");
    }
  }
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0)) {
    return tok::FieldError(source, "model.dropout", "BPE dropout is not supported at inference");
  }
  m->fuse_unk_ = model.value("fuse_unk", false);
  m->ignore_merges_ = model.value("ignore_merges", false);

  // Vocabulary.
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return tok::FieldError(source, "model.vocab", "missing or not an object");
  }
  const nlohmann::json& vocab = model["vocab"];
  m->token_to_id_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > tok::kMaxTokenId) {
      return tok::FieldError(
          source, "model.vocab",
          tok::Cat("id of '", it.key(), "' is not an integer in [0, ", tok::kMaxTokenId, "]"));
    }
    const int32_t id = static_cast<int32_t>(it.value().get<int64_t>());
    if (static_cast<size_t>(id) >= m->tokens_.size()) {
      m->tokens_.resize(id + 1);
      m->present_.resize(id + 1, false);
    }
    m->tokens_[id] = it.key();
    m->present_[id] = true;
    m->token_to_id_[it.key()] = id;
    const int b = SingleByteOf(it.key());
    if (b >= 0) m->byte_to_id_[b] = id;
  }

  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    m->unk_id_ = m->IdOf(model["unk_token"].get<std::string>());
  }

  // Merges, ranked by position. Both serialisations: "a b" strings (tokenizers < 0.20) and
  // ["a", "b"] pairs (>= 0.20, which allows spaces inside tokens).
  if (model.contains("merges") && !model["merges"].is_null()) {
    const nlohmann::json& merges = model["merges"];
    if (!merges.is_array()) return tok::FieldError(source, "model.merges", "not an array");
    m->merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const nlohmann::json& e = merges[rank];
      std::string a, b;
      if (e.is_string()) {
        const std::string& s = e.get_ref<const std::string&>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
          return tok::FieldError(source, tok::Cat("model.merges[", rank, "]"),
                                 tok::Cat("expected \"a b\", got \"", s, "\""));
        }
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        return tok::FieldError(source, tok::Cat("model.merges[", rank, "]"),
                               "expected a \"a b\" string or an [a, b] pair");
      }
      const int32_t ia = m->IdOf(a), ib = m->IdOf(b), iab = m->IdOf(a + b);
      if (ia < 0 || ib < 0 || iab < 0) {
        return tok::FieldError(
            source, tok::Cat("model.merges[", rank, "]"),
            tok::Cat("merge '", a, "' + '", b, "' uses a token that is not in model.vocab"));
      }
      // Like HF, a repeated pair takes the later rank.
      m->merges_[PairKey(ia, ib)] = Merge{static_cast<int32_t>(rank), iab};
    }
  }
  return m;
}

const std::string* BpeModel::TokenString(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || !present_[id]) return nullptr;
  return &tokens_[id];
}

int32_t BpeModel::IdOf(std::string_view token) const {
  auto it = token_to_id_.find(tok::AbslView(token));
  return it == token_to_id_.end() ? -1 : it->second;
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<int32_t>* ids) const {
  ids->clear();
  bool last_unk = false;
  for (unsigned char c : word) {
    const int32_t id = byte_to_id_[c];
    if (id >= 0) {
      ids->push_back(id);
      last_unk = false;
    } else if (unk_id_ >= 0) {
      if (!(fuse_unk_ && last_unk)) ids->push_back(unk_id_);
      last_unk = true;
    }
    // No unk token: HF drops the byte.
  }
}

void BpeModel::MergeSmall(std::vector<int32_t>* ids_vec) const {
  int32_t* ids = ids_vec->data();
  size_t n = ids_vec->size();
  int32_t rank[kSmallWordSymbols];
  int32_t merged[kSmallWordSymbols];
  auto fill = [&](size_t i) {
    const Merge* mg = FindMerge(ids[i], ids[i + 1]);
    rank[i] = mg ? mg->rank : INT32_MAX;
    merged[i] = mg ? mg->merged_id : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) fill(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (rank[i] < rank[best]) best = i;  // strict: ties go to the leftmost pair, as in HF
    }
    if (rank[best] == INT32_MAX) break;
    ids[best] = merged[best];
    // Remove symbol best+1 and pair slot best; slot best is then refilled below.
    for (size_t i = best + 1; i + 1 < n; ++i) ids[i] = ids[i + 1];
    for (size_t i = best + 1; i + 2 < n; ++i) {
      rank[i] = rank[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0) fill(best - 1);
    if (best + 1 < n) fill(best);
  }
  ids_vec->resize(n);
}

void BpeModel::MergeHeap(std::vector<int32_t>* ids_vec) const {
  std::vector<int32_t>& ids = *ids_vec;
  const int32_t n = static_cast<int32_t>(ids.size());
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Entry {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push = [&](int32_t pos) {
    const int32_t r = next[pos];
    if (r < 0) return;
    if (const Merge* mg = FindMerge(ids[pos], ids[r])) {
      heap.push(Entry{mg->rank, pos, ids[pos], ids[r], mg->merged_id});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Entry e = heap.top();
    heap.pop();
    // Entries go stale when a neighbour merged first; skip those whose pair no longer exists.
    if (!alive[e.pos]) continue;
    const int32_t r = next[e.pos];
    if (r < 0 || ids[e.pos] != e.left || ids[r] != e.right) continue;
    ids[e.pos] = e.merged;
    alive[r] = false;
    next[e.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = e.pos;
    if (prev[e.pos] >= 0) push(prev[e.pos]);
    push(e.pos);
  }
  size_t out = 0;
  for (int32_t i = 0; i >= 0 && i < n; i = next[i]) ids[out++] = ids[i];
  ids.resize(out);
}

void BpeModel::MergeWord(std::string_view word, bool force_heap, std::vector<int32_t>* out) const {
  if (ignore_merges_) {
    std::string mapped;
    for (unsigned char c : word) utf8::AppendCodepoint(utf8::ByteToCodepoint(c), &mapped);
    if (const int32_t id = IdOf(mapped); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  thread_local std::vector<int32_t> ids;
  InitialSymbols(word, &ids);
  if (ids.size() > 1) {
    if (force_heap || ids.size() > kSmallWordSymbols) {
      MergeHeap(&ids);
    } else {
      MergeSmall(&ids);
    }
  }
  out->insert(out->end(), ids.begin(), ids.end());
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.size() == 1 && !ignore_merges_) {
    const int32_t id = byte_to_id_[static_cast<unsigned char>(word[0])];
    if (id >= 0) {
      out->push_back(id);
    } else if (unk_id_ >= 0) {
      out->push_back(unk_id_);
    }
    return;
  }
  if (word.size() > kMaxCachedWordBytes) {
    MergeWord(word, /*force_heap=*/false, out);
    return;
  }
  // Shard on high hash bits: the map itself uses the low ones, which would otherwise be
  // constant within a shard.
  const size_t h = absl::Hash<absl::string_view>{}(tok::AbslView(word));
  CacheShard& shard = cache_[(h >> 56) % kCacheShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.map.find(tok::AbslView(word));
    if (it != shard.map.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out->size();
  MergeWord(word, /*force_heap=*/false, out);
  std::vector<int32_t> ids(out->begin() + before, out->end());
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.map.size() >= kCacheShardCapacity) shard.map.clear();
  shard.map.emplace(word, std::move(ids));
}

}  // namespace jetserve
