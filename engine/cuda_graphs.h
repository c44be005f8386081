// CUDA graphs for decode steps. A decode step (every sequence one token, last-token logits) of
// n sequences is padded to its bucket (Bucket; the padding runs on spare pool entries) and
// replayed from a graph captured per Key. A key's first step runs uncaptured (it plans
// cuBLASLt's shapes and sizes the step's buffers), its second is captured, later ones replay.
// Graphs hold buffer addresses: Invalidate() (a buffer moved) destroys every graph, each rebuilt
// on its key's next use. At most max_graphs are kept: a long-running server meets many (bucket,
// split counts, greedy) keys as its batch and contexts move, and each graph holds device memory
// for its ~700 nodes; the least recently launched goes first (recaptured, without a new warm-up,
// if its key comes back).
#ifndef JETSERVE_ENGINE_CUDA_GRAPHS_H_
#define JETSERVE_ENGINE_CUDA_GRAPHS_H_

#include <cuda_runtime.h>

#include <compare>
#include <cstdint>
#include <map>
#include <set>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace jetserve {

class DecodeGraphCache {
 public:
  static constexpr int64_t kMaxBatch = 4096;
  // Powers of two up to 64, then multiples of 64: at most 70 buckets up to kMaxBatch, fewer
  // than 64 padding sequences.
  static int64_t Bucket(int64_t n);

  struct Key {
    int64_t bucket = 0;
    int64_t splits = 0;      // attention split count (cuda_step_meta.h, GraphSplitCount)
    int64_t swa_splits = 0;  // the window layers'
    bool greedy = false;     // the graph also samples greedily and copies the ids back
    auto operator<=>(const Key&) const = default;
  };

  static constexpr int64_t kDefaultMaxGraphs = 64;
  explicit DecodeGraphCache(int64_t max_graphs = kDefaultMaxGraphs)
      : max_graphs_(max_graphs < 1 ? 1 : max_graphs) {}
  DecodeGraphCache(const DecodeGraphCache&) = delete;
  DecodeGraphCache& operator=(const DecodeGraphCache&) = delete;
  ~DecodeGraphCache() { Clear(); }

  // Enqueues the step for `key` on `stream`: `enqueue` runs uncaptured on the key's first use,
  // is captured into a graph (then launched) on its second or when its graph is stale, and is
  // not called once the graph exists. enqueue must be capturable (no synchronisation, no
  // allocation). A failed capture leaves no graph.
  absl::Status Run(const Key& key, cudaStream_t stream, absl::FunctionRef<absl::Status()> enqueue);
  // A buffer a graph uses moved. Destroying a graph still running on the stream is safe: CUDA
  // frees it when it completes.
  void Invalidate() { Clear(); }
  // Destroys every graph (e.g. before a buffer the graphs copy into is freed).
  void Clear();

  int64_t size() const { return static_cast<int64_t>(graphs_.size()); }
  bool Has(const Key& key) const { return graphs_.count(key) != 0; }
  int64_t max_graphs() const { return max_graphs_; }

 private:
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    uint64_t last_used = 0;  // tick of its latest launch
  };
  // Destroys the least recently launched graph.
  void EvictOne();

  int64_t max_graphs_;
  std::map<Key, Graph> graphs_;
  std::set<Key> warmed_;
  uint64_t tick_ = 0;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CUDA_GRAPHS_H_
