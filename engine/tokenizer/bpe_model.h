// The tokenizer.json `model` stage: byte-level BPE (vocab + ranked merges), working on raw
// bytes. Vocabulary strings are in GPT-2's byte-unicode alphabet and are mapped back to bytes
// at load time, so encoding never builds the remapped string.
#ifndef JETSERVE_ENGINE_TOKENIZER_BPE_MODEL_H_
#define JETSERVE_ENGINE_TOKENIZER_BPE_MODEL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace jetserve {

class BpeModel {
 public:
  // Parses the `model` field (type BPE). `source` names the file for error messages.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model,
                                                            std::string_view source);

  // Appends the ids of one pre-token (raw bytes). Thread-safe.
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;

  // The merge loop without the cache. `force_heap` selects the priority-queue variant that long
  // words use, so tests can check both variants agree.
  void MergeWord(std::string_view word, bool force_heap, std::vector<int32_t>* out) const;

  // 1 + the largest vocabulary id (0 if empty).
  int32_t id_limit() const { return static_cast<int32_t>(tokens_.size()); }
  // The vocabulary string (byte-unicode alphabet) of `id`, or null if there is none.
  const std::string* TokenString(int32_t id) const;
  // The id of a vocabulary string, or -1.
  int32_t IdOf(std::string_view token) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  // Maps the bytes of `word` to initial symbols (unknown bytes: unk or dropped, as HF does).
  void InitialSymbols(std::string_view word, std::vector<int32_t>* ids) const;
  void MergeSmall(std::vector<int32_t>* ids) const;
  void MergeHeap(std::vector<int32_t>* ids) const;

  std::vector<std::string> tokens_;  // id -> vocabulary string ("" for holes)
  std::vector<bool> present_;        // id -> whether the vocabulary has it
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  int32_t byte_to_id_[256];  // -1: the byte has no single-byte token
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  // Pre-token -> ids cache, sharded so that concurrent Encode calls rarely contend. Bounded: a
  // full shard is cleared (cheap, and a natural-text working set refills it quickly).
  static constexpr int kCacheShards = 16;
  static constexpr size_t kCacheShardCapacity = 8192;
  static constexpr size_t kMaxCachedWordBytes = 128;
  struct alignas(64) CacheShard {
    std::mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map;
  };
  mutable std::unique_ptr<CacheShard[]> cache_ = std::make_unique<CacheShard[]>(kCacheShards);
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_TOKENIZER_BPE_MODEL_H_
