// One choice of one request inside the engine: its tokens, how many of them are in its caches,
// the memory it holds, and the per-choice state of sampling, detokenisation and stopping. A
// request with n > 1 has n Sequences sharing one RequestGroup. Owned and touched only by the
// engine's step thread.
#ifndef JETSERVE_ENGINE_SEQUENCE_H_
#define JETSERVE_ENGINE_SEQUENCE_H_

#include <chrono>
#include <cstdint>
#include <memory>
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

// What a request's choices share.
struct RequestGroup {
  RequestGroup(EngineRequest r, std::vector<int32_t> p, OutputSink s);

  const EngineRequest request;
  const std::vector<int32_t> prompt;
  // The prompt's distinct ids, sorted; filled only when repetition_penalty applies.
  const std::vector<int32_t> prompt_distinct;
  const OutputSink sink;
  const Clock::time_point arrival;
  int32_t unfinished;   // choices not finished yet
  bool forked = false;  // choices 1..n-1 exist (made when choice 0 finishes the prompt)
  bool first_token_reported = false;
  int64_t completion_tokens = 0;  // of the finished choices
};

class Sequence {
 public:
  // Choice 0 of a new request.
  Sequence(std::shared_ptr<RequestGroup> group, const Tokenizer* tokenizer, int64_t arrival_order);
  // Choice `index` of the same request, starting where this one is now: same tokens, same
  // number computed, no memory yet (the engine copies or recomputes it). Its generator is
  // seeded from the request's seed and the index.
  std::unique_ptr<Sequence> ForkChoice(int32_t index) const;

  const std::string& id() const { return group_->request.request_id; }
  const EngineRequest& request() const { return group_->request; }
  RequestGroup& group() const { return *group_; }
  int32_t index() const { return index_; }
  int64_t arrival_order() const { return arrival_order_; }
  // Choice 0 before the others exist: admission should make room for all n.
  bool will_fork() const { return index_ == 0 && !group_->forked && group_->request.n > 1; }

  // Tokens: the prompt followed by everything generated so far.
  int64_t prompt_len() const { return static_cast<int64_t>(group_->prompt.size()); }
  int64_t output_len() const { return static_cast<int64_t>(output_.size()); }
  int64_t total_len() const { return prompt_len() + output_len(); }
  int32_t token(int64_t i) const {
    return i < prompt_len() ? group_->prompt[i] : output_[i - prompt_len()];
  }
  const std::vector<int32_t>& output() const { return output_; }

  // Tokens already in the caches; the rest must still be computed (>= 1 while running).
  int64_t num_computed() const { return num_computed_; }
  int64_t num_uncomputed() const { return total_len() - num_computed_; }
  void AddComputed(int64_t n) { num_computed_ += n; }
  // Preemption by recomputation: the caches are dropped, every token is computed again.
  void ResetComputed() { num_computed_ = 0; }

  SequenceMemory& memory() { return memory_; }
  const SequenceMemory& memory() const { return memory_; }
  Rng& rng() { return rng_; }

  // What the sampler's penalties and bans need now. `eos_ids` are banned (with the request's
  // stop token ids) until min_tokens tokens exist.
  SamplingContext sampling_context(const std::vector<int32_t>& eos_ids);

  // Appends a sampled token; decodes its text and applies stop strings (from min_tokens on).
  // Returns the output message for it (not yet finished).
  RequestOutput AppendToken(const SampledToken& token);
  // The final message of this choice: flushes held-back text; sets the reason, status, usage.
  RequestOutput Finish(FinishReason reason, absl::Status status, std::string stop_reason);
  bool stopped_by_string() const { return stop_matcher_.stopped(); }
  const std::string& matched_stop() const { return stop_matcher_.matched(); }

  void Emit(RequestOutput out) const { group_->sink(std::move(out)); }

  // Timing, for metrics.
  std::optional<Clock::time_point> first_scheduled;
  std::optional<Clock::time_point> last_token_time;
  bool cancel_requested = false;
  absl::Status cancel_status;  // why: Cancelled, DeadlineExceeded, Unavailable

 private:
  Sequence(std::shared_ptr<RequestGroup> group, int32_t index, const Tokenizer* tokenizer,
           int64_t arrival_order);

  std::shared_ptr<RequestGroup> group_;
  int32_t index_;
  const Tokenizer* tokenizer_;
  std::vector<int32_t> output_;
  TokenCounts output_counts_;  // for presence / frequency / repetition penalties
  std::vector<int32_t> banned_;
  int64_t num_computed_ = 0;
  int64_t arrival_order_;
  SequenceMemory memory_;
  Rng rng_;
  IncrementalDetokenizer detokenizer_;
  StopMatcher stop_matcher_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_SEQUENCE_H_
