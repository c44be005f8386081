// One request inside the engine: its tokens, how many of them are in its caches, the memory it
// holds, and the per-request state of sampling, detokenisation and stopping. Owned and touched
// only by the engine's step thread.
#ifndef JETSERVE_ENGINE_SEQUENCE_H_
#define JETSERVE_ENGINE_SEQUENCE_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/memory/sequence_memory.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer/tokenizer.h"

namespace jetserve {

using Clock = std::chrono::steady_clock;

class Sequence {
 public:
  Sequence(EngineRequest request, std::vector<int32_t> prompt, OutputSink sink,
           const Tokenizer* tokenizer, int64_t arrival_order);

  const std::string& id() const { return request_.request_id; }
  const EngineRequest& request() const { return request_; }
  int64_t arrival_order() const { return arrival_order_; }

  // Tokens: the prompt followed by everything generated so far.
  int64_t prompt_len() const { return static_cast<int64_t>(prompt_.size()); }
  int64_t output_len() const { return static_cast<int64_t>(output_.size()); }
  int64_t total_len() const { return prompt_len() + output_len(); }
  int32_t token(int64_t i) const {
    return i < prompt_len() ? prompt_[i] : output_[i - prompt_len()];
  }
  const std::vector<int32_t>& output() const { return output_; }

  // Tokens already in the caches; the rest must still be computed (>= 1 while running).
  int64_t num_computed() const { return num_computed_; }
  int64_t num_uncomputed() const { return total_len() - num_computed_; }
  void AddComputed(int64_t n) { num_computed_ += n; }
  // Preemption by recomputation: the caches are dropped, every token is computed again.
  void ResetComputed() { num_computed_ = 0; }

  SequenceMemory& memory() { return memory_; }
  Rng& rng() { return rng_; }

  // Appends a sampled token; decodes its text and applies stop strings. Returns the output
  // message for it (not yet finished).
  RequestOutput AppendToken(const SampledToken& token);
  // The final message: flushes held-back text; sets the reason, status and usage.
  RequestOutput Finish(FinishReason reason, absl::Status status, std::string stop_reason);
  bool stopped_by_string() const { return stop_matcher_.stopped(); }
  const std::string& matched_stop() const { return stop_matcher_.matched(); }

  void Emit(RequestOutput out) const { sink_(std::move(out)); }

  // Timing, for metrics.
  Clock::time_point arrival;
  std::optional<Clock::time_point> first_scheduled;
  std::optional<Clock::time_point> last_token_time;
  bool cancel_requested = false;
  absl::Status cancel_status;  // why: Cancelled, DeadlineExceeded, Unavailable

 private:
  EngineRequest request_;
  std::vector<int32_t> prompt_;
  std::vector<int32_t> output_;
  int64_t num_computed_ = 0;
  int64_t arrival_order_;
  SequenceMemory memory_;
  Rng rng_;
  OutputSink sink_;
  IncrementalDetokenizer detokenizer_;
  StopMatcher stop_matcher_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_SEQUENCE_H_
