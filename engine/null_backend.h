// `--device null`: a backend that computes nothing. Every step returns at once, and each
// sequence's next token is a pseudo-random id drawn from (its seed, its step) — never an
// end-of-sequence id, so a request runs to max_tokens or a stop string. What remains of a step
// is the server's own work (scheduling, the step's batch, detokenising, stop matching,
// streaming), so `jetserve bench-serve` against `jetserve serve --device null` measures the
// highest token rate the host side can sustain: the ceiling a device's forward pass must be
// compared with (the idea of Triton's perf_analyzer run against an identity model). The text it
// produces is meaningless; the caches are neither allocated nor touched.
#ifndef JETSERVE_ENGINE_NULL_BACKEND_H_
#define JETSERVE_ENGINE_NULL_BACKEND_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/checkpoint/model_config.h"
#include "engine/model.h"

namespace jetserve {

class NullBackend : public ForwardBackend {
 public:
  explicit NullBackend(const ModelConfig& config);

  std::string name() const override { return "null"; }
  int64_t kv_element_bytes() const override { return 2; }  // sized like the CUDA backend's
  absl::Status AttachMemory(HybridMemory& memory) override { return absl::OkStatus(); }
  // Logits all zero (a uniform distribution), [rows, vocab].
  absl::Status Forward(const ForwardBatch& batch, HybridMemory& memory,
                       std::vector<float>* logits) override;
  bool CanSample(const SamplingParams& params) const override { return true; }
  absl::Status ForwardKeepLogits(const ForwardBatch& batch, HybridMemory& memory) override;
  // The token of (seed, step); its log-probability and each of the top_logprobs alternatives'
  // is the uniform distribution's, -log(vocab).
  absl::Status SampleLast(const std::vector<SampleSpec>& specs,
                          std::vector<SampledToken>* tokens) override;

  // The id SampleLast returns for a choice's `step`-th token: uniform over the vocabulary
  // without the end-of-sequence ids.
  int32_t TokenFor(uint64_t seed, uint64_t step) const;

 private:
  size_t TokenIndex(uint64_t seed, uint64_t step) const;  // into ordinary_

  int32_t vocab_;
  std::vector<int32_t> ordinary_;  // every id but the end-of-sequence ones, ascending
  int64_t kept_rows_ = 0;          // rows of the last ForwardKeepLogits
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_NULL_BACKEND_H_
