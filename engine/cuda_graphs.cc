#include "engine/cuda_graphs.h"

#include "engine/status_macros.h"
#include "kernels/cuda/cuda_check.h"

namespace jetserve {

int64_t DecodeGraphCache::Bucket(int64_t n) {
  if (n > 64) return (n + 63) / 64 * 64;
  int64_t b = 1;
  while (b < n) b *= 2;
  return b;
}

void DecodeGraphCache::Clear() {
  for (auto& [key, g] : graphs_) {
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
  }
  graphs_.clear();
}

void DecodeGraphCache::EvictOne() {
  auto oldest = graphs_.begin();
  for (auto it = graphs_.begin(); it != graphs_.end(); ++it) {
    if (it->second.last_used < oldest->second.last_used) oldest = it;
  }
  if (oldest == graphs_.end()) return;
  if (oldest->second.exec != nullptr) cudaGraphExecDestroy(oldest->second.exec);
  graphs_.erase(oldest);
}

absl::Status DecodeGraphCache::Run(const Key& key, cudaStream_t stream,
                                   absl::FunctionRef<absl::Status()> enqueue) {
  auto it = graphs_.find(key);
  if (it == graphs_.end() && warmed_.insert(key).second) return enqueue();
  if (it == graphs_.end()) {
    while (size() >= max_graphs_) EvictOne();
    CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    const absl::Status s = enqueue();
    cudaGraph_t g = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream, &g);
    if (!s.ok()) {
      if (g != nullptr) cudaGraphDestroy(g);
      return s;
    }
    CUDA_RETURN_IF_ERROR(end);
    Graph graph;
    const cudaError_t inst = cudaGraphInstantiate(&graph.exec, g, 0);
    cudaGraphDestroy(g);
    CUDA_RETURN_IF_ERROR(inst);
    it = graphs_.emplace(key, graph).first;
  }
  it->second.last_used = ++tick_;
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second.exec, stream));
  return absl::OkStatus();
}

}  // namespace jetserve
