// The Jet-Nemotron forward pass over a batch of sequences given as one flat token list, reading
// and updating each sequence's caches (jet state + conv tail, swa ring, paged KV) in place.
// Any layer pattern and sizes; bf16/f16/f32 weights read in their stored type, math in fp32.
#ifndef JETSERVE_ENGINE_MODEL_H_
#define JETSERVE_ENGINE_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/memory/hybrid_memory.h"
#include "engine/sampler.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/jet_ops.h"
#include "kernels/cpu/linear.h"

namespace jetserve {

// One sequence's part of a step: `num_tokens` new tokens at positions start_position, ...
struct BatchSequence {
  SequenceMemory* memory = nullptr;  // reserved for start_position + num_tokens positions
  int64_t start_position = 0;        // tokens already in this sequence's caches
  int64_t num_tokens = 0;
  bool all_logits = false;  // logits for every token; otherwise only for the last
};

struct ForwardBatch {
  std::vector<int32_t> token_ids;  // [tokens]: each sequence's tokens, in `seqs` order
  std::vector<BatchSequence> seqs;

  // Rows of the step's logits: one per sequence, or one per token of an all_logits sequence.
  int64_t logits_rows() const {
    int64_t rows = 0;
    for (const BatchSequence& s : seqs) rows += s.all_logits ? s.num_tokens : 1;
    return rows;
  }
};

// Where a forward pass spends its time, for benchmarks. Filled only while attached with
// Model::set_profile; adding to it costs two clock reads per op.
struct ForwardProfile {
  double linear_seconds = 0;       // every y = x Wᵀ (+ b), the LM head included
  double linear_flops = 0;         // 2 · tokens · rows · cols summed over them
  double linear_weight_bytes = 0;  // bytes of the weight matrices they read
  double attention_seconds = 0;    // attn + swa: RoPE, cache writes, softmax attention
  double jet_seconds = 0;          // jet layers' conv, gates, norms and delta-rule recurrence
  double forward_seconds = 0;      // whole Forward calls
  int64_t forward_calls = 0;
  void Reset() { *this = ForwardProfile{}; }
};

// Where a Model's forward pass runs when not on the CPU (engine/cuda_backend.h). The Model
// keeps the checkpoint and the CPU path; a backend attached to it takes over Forward. The
// HybridMemory stays the bookkeeper of slots, rings and KV blocks; the backend holds the
// contents (MemoryOptions::host_storage false) and follows hand-outs and forks as its observer.
class ForwardBackend {
 public:
  virtual ~ForwardBackend() = default;
  virtual std::string name() const = 0;
  // Whether the caches' contents stay in HybridMemory's host pools (a test backend that runs
  // on the CPU); a device backend keeps them itself.
  virtual bool keeps_cache_on_host() const { return false; }
  // Bytes per element of the KV pages and window rings as the backend stores them (its pools'
  // size for a memory budget): 4 for fp32, 2 for bf16.
  virtual int64_t kv_element_bytes() const { return 4; }
  // Sizes the backend's own pools like `memory`'s and starts observing it. Once, before Forward.
  virtual absl::Status AttachMemory(HybridMemory& memory) = 0;
  // Same contract as Model::Forward (the batch is already validated).
  virtual absl::Status Forward(const ForwardBatch& batch, HybridMemory& memory,
                               std::vector<float>* logits) = 0;

  // Optional sampling where the logits are (the engine's fast path): ForwardKeepLogits leaves
  // the step's logits on the device, SampleLast samples rows of them and returns only tokens.
  struct SampleSpec {
    int64_t row = 0;  // logits row (several specs may share one: the choices of n > 1)
    const SamplingParams* params = nullptr;
    SamplingContext context;
    uint64_t seed = 0;  // the choice's seed
    uint64_t step = 0;  // tokens it has generated so far (the draw's counter)
  };
  // Whether SampleLast can honour these parameters (e.g. its top-logprobs limit).
  virtual bool CanSample(const SamplingParams& params) const { return false; }
  virtual absl::Status ForwardKeepLogits(const ForwardBatch& batch, HybridMemory& memory) {
    return absl::UnimplementedError("this backend does not sample on its device");
  }
  virtual absl::Status SampleLast(const std::vector<SampleSpec>& specs,
                                  std::vector<SampledToken>* tokens) {
    return absl::UnimplementedError("this backend does not sample on its device");
  }
};

class Model {
 public:
  // Opens and validates the checkpoint in `dir` (see Checkpoint::Open).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir);

  ~Model();

  const ModelConfig& config() const { return checkpoint_->config(); }
  const Checkpoint& checkpoint() const { return *checkpoint_; }

  // Runs every layer over the batch. logits: [rows, vocab], one row per sequence (its last
  // token) or per token when all_logits, in batch order. Not thread-safe: one step at a time.
  absl::Status Forward(const ForwardBatch& batch, HybridMemory& memory, std::vector<float>* logits);

  // Attaches a profile that every later Forward adds to (nullptr detaches).
  void set_profile(ForwardProfile* profile) { profile_ = profile; }

  // Runs every later Forward on `backend` (nullptr: back to the CPU).
  void set_backend(std::unique_ptr<ForwardBackend> backend);
  ForwardBackend* backend() const { return backend_.get(); }
  // What HybridMemory::Create needs for this model: host storage only on the CPU path.
  bool needs_host_cache() const { return backend_ == nullptr || backend_->keeps_cache_on_host(); }
  // MemoryOptions::kv_element_bytes for this model: fp32 (4) on the host path.
  int64_t kv_element_bytes() const { return needs_host_cache() ? 4 : backend_->kv_element_bytes(); }
  // Lets the backend (if any) size its pools like `memory`'s. Call once after creating it.
  absl::Status AttachMemory(HybridMemory& memory);
  // Forward keeping the logits on the backend's device, for ForwardBackend::SampleLast
  // (requires a backend).
  absl::Status ForwardKeepLogits(const ForwardBatch& batch, HybridMemory& memory);

 private:
  struct Layer;
  explicit Model(std::unique_ptr<Checkpoint> checkpoint);
  absl::Status Validate(const ForwardBatch& batch, HybridMemory& memory) const;
  void AttentionMixer(const Layer& layer, int64_t layer_index, const ForwardBatch& batch,
                      HybridMemory& memory);
  void JetMixer(const Layer& layer, int64_t layer_index, const ForwardBatch& batch,
                HybridMemory& memory);
  void Mlp(const Layer& layer, int64_t tokens);
  // kernels::cpu::Linear, timed into profile_ when one is attached.
  void Linear(const float* x, int64_t tokens, const kernels::cpu::WeightMatrix& w,
              const float* bias, float* y);

  std::unique_ptr<Checkpoint> checkpoint_;
  std::vector<Layer> layers_;
  kernels::cpu::WeightMatrix embed_;
  kernels::cpu::WeightMatrix lm_head_;
  std::vector<float> final_norm_;  // [H]

  // Step workspace, grown on demand and reused (no allocation once warmed up).
  std::vector<float> x_;            // [T, H] residual stream
  std::vector<float> hn_;           // [T, H] normed input of the current sub-block
  std::vector<float> delta_;        // [T, H] sub-block output
  std::vector<float> buf_[8];       // per-op scratch
  std::vector<int32_t> positions_;  // [T]
  std::vector<kernels::cpu::AttentionSeq> attn_seqs_;  // [sequences], refilled per layer
  std::vector<kernels::cpu::JetSeq> jet_seqs_;         // [sequences], refilled per layer
  ForwardProfile* profile_ = nullptr;
  std::unique_ptr<ForwardBackend> backend_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MODEL_H_
