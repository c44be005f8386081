// Generation for one sequence at a time: chunked prefill, then one-token decode steps. Used by
// the `generate` command and by tests as the simplest driver of the model; the server's
// continuous-batching loop drives the same Model::Forward with many sequences per step.
#ifndef JETSERVE_ENGINE_GENERATION_H_
#define JETSERVE_ENGINE_GENERATION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/memory/hybrid_memory.h"
#include "engine/model.h"
#include "engine/request.h"
#include "engine/sampler.h"

namespace jetserve {

struct GenerationOptions {
  int32_t max_tokens = 16;
  SamplingParams sampling;
  int64_t prefill_chunk = 512;          // prompt tokens per forward step
  std::vector<int32_t> stop_token_ids;  // generation ends after emitting one of these
};

// The ids that end generation by default: config.json's eos_token_id(s) plus those of
// generation_config.json when the checkpoint has one.
std::vector<int32_t> DefaultStopTokenIds(const Model& model);

// Memory for `max_seqs` sequences of up to `max_context` positions each.
absl::StatusOr<std::unique_ptr<HybridMemory>> MemoryForContext(const ModelConfig& config,
                                                               int64_t max_seqs,
                                                               int64_t max_context);

// Prefills `prompt`, then samples until a stop token, max_tokens, or the model's context limit.
// Calls on_token for every generated token. `memory` must have room for one sequence of
// prompt + max_tokens positions; everything taken is returned before this returns.
absl::StatusOr<FinishReason> GenerateOne(Model& model, HybridMemory& memory,
                                         const std::vector<int32_t>& prompt,
                                         const GenerationOptions& options,
                                         const std::function<void(const SampledToken&)>& on_token);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_GENERATION_H_
