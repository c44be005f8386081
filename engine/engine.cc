#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/generation.h"
#include "engine/random.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "engine/status_macros.h"

namespace jetserve {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Arrival order, then choice order: the order in which a batch of final messages goes out.
bool ArrivalThenChoice(const Sequence* a, const Sequence* b) {
  return a->arrival_order() != b->arrival_order() ? a->arrival_order() < b->arrival_order()
                                                  : a->index() < b->index();
}

double UsageFraction(const SequenceMemoryPool* pool) {
  return pool == nullptr ? 0.0 : pool->Usage().fraction();
}

}  // namespace

class Engine::Impl {
 public:
  Impl(std::unique_ptr<Model> model, std::unique_ptr<Tokenizer> tokenizer,
       std::optional<ChatTemplate> chat_template, std::unique_ptr<HybridMemory> memory,
       const EngineOptions& options, EngineLimits limits, EngineMetrics* metrics)
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        chat_template_(std::move(chat_template)),
        memory_(std::move(memory)),
        options_(options),
        limits_(limits),
        metrics_(metrics != nullptr ? metrics : &null_metrics_),
        eos_ids_(DefaultStopTokenIds(*model_)),
        scheduler_(memory_.get(), {options.max_seqs, options.max_batch_tokens}) {
    PublishStats();
    thread_ = std::thread([this] { Loop(); });
  }

  ~Impl() { Shutdown(std::chrono::milliseconds(0)); }

  absl::StatusOr<std::string> Submit(EngineRequest request, OutputSink sink);
  void Cancel(const std::string& id, uint64_t owner);
  void StopAccepting();
  void Shutdown(std::chrono::milliseconds grace);

  bool accepting() const {
    std::lock_guard<std::mutex> lock(mu_);
    return accepting_;
  }
  EngineStats Stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats stats = stats_;
    // Accepted requests count as waiting from Submit on, not from when the step thread first
    // sees them; preempted ones waiting again come from the step thread's last publication.
    stats.num_waiting = num_queued_ + preempted_waiting_;
    return stats;
  }
  const EngineLimits& limits() const { return limits_; }
  const Model& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatTemplate* chat_template() const {
    return chat_template_.has_value() ? &*chat_template_ : nullptr;
  }

 private:
  absl::Status ValidateParams(const EngineRequest& r) const;
  absl::StatusOr<std::vector<int32_t>> ValidateAndTokenize(const EngineRequest& r) const;
  void Loop();
  void Step();
  // Applies cancellations, deadlines and shutdown to the sequences the step thread holds.
  void ApplyCancellations(const std::vector<std::string>& cancels, bool cancel_all);
  // Ends one choice; the request ends with its last choice.
  void FinishSequence(Sequence* seq, RequestOutput out);
  // A step failed: fails every request, refuses new ones, reports the fatal error.
  void Fail(const absl::Status& status);
  // Choice 0 of an n > 1 request finished its prompt: makes choices 1..n-1, copying its memory
  // into theirs when there is room (else they wait and compute the prompt themselves).
  std::vector<Sequence*> ForkChoices(Sequence* seq);
  // Samples the next token of `seq` from its logits row and streams or finishes it.
  void SampleNext(Sequence* seq, const float* logits, Clock::time_point now);
  // Appends a sampled token to `seq` and streams or finishes it.
  void Deliver(Sequence* seq, const SampledToken& token, Clock::time_point now);
  // The sequence leaves the queue for the first time (admitted, or finished while queued).
  void MarkAdmitted(Sequence* seq);
  // Copies the step thread's counters where Stats() can read them.
  void PublishStats();
  StepStats UsageStats() const;

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  const std::optional<ChatTemplate> chat_template_;  // refers to *tokenizer_; none: no chat
  std::unique_ptr<HybridMemory> memory_;
  const EngineOptions options_;
  const EngineLimits limits_;
  EngineMetrics null_metrics_;
  EngineMetrics* metrics_;
  const std::vector<int32_t> eos_ids_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // step thread waits for work
  std::condition_variable idle_cv_;  // Shutdown waits for in-flight requests to finish
  std::vector<std::unique_ptr<Sequence>> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> cancels_ ABSL_GUARDED_BY(mu_);
  // Submitted, not finished: id → owner tag (EngineRequest::owner).
  std::unordered_map<std::string, uint64_t> active_ids_ ABSL_GUARDED_BY(mu_);
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;  // a step failed: nothing is served any more
  bool cancel_all_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_arrival_ ABSL_GUARDED_BY(mu_) = 0;
  // Requests accepted but not yet admitted once: what --max-queue bounds. Preempted sequences
  // are not counted again: they were accepted already.
  int64_t num_queued_ ABSL_GUARDED_BY(mu_) = 0;
  // Sequence slots (n each) of the requests admitted and not finished: the free ones take
  // queued requests at the next step, so only requests beyond them count against max_queue.
  int64_t admitted_slots_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t preempted_waiting_ ABSL_GUARDED_BY(mu_) = 0;  // admitted once, now queued again
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;

  // Step thread only.
  std::unordered_map<Sequence*, std::unique_ptr<Sequence>> seqs_;
  Scheduler scheduler_;
  Sampler sampler_;
  std::vector<float> logits_;
  int64_t steps_ = 0, prompt_tokens_computed_ = 0, preemptions_ = 0;
};

absl::Status Engine::Impl::ValidateParams(const EngineRequest& r) const {
  const ModelConfig& c = model_->config();
  if (r.max_tokens < 1 || r.max_tokens > limits_.max_output_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: ", r.max_tokens, " is outside [1, ",
                                                   limits_.max_output_tokens,
                                                   "] (the server's --max-output-tokens)"));
  }
  if (r.min_tokens < 0 || r.min_tokens > r.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_tokens: ", r.min_tokens, " is outside [0, max_tokens = ", r.max_tokens, "]"));
  }
  if (r.n < 1 || r.n > limits_.max_n) {
    return absl::InvalidArgumentError(
        absl::StrCat("n: ", r.n, " is outside [1, ", limits_.max_n, "] (the server's --max-n)"));
  }
  RETURN_IF_ERROR(ValidateSamplingParams(r.sampling, c.vocab_size, limits_.max_logprobs));
  if (static_cast<int64_t>(r.stop.size()) > limits_.max_stop_strings) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop: ", r.stop.size(), " stop strings, more than the limit of ",
                     limits_.max_stop_strings, " (the server's --max-stop-strings)"));
  }
  for (size_t i = 0; i < r.stop.size(); ++i) {
    if (r.stop[i].empty()) {
      return absl::InvalidArgumentError("stop: stop strings must not be empty");
    }
    if (static_cast<int64_t>(r.stop[i].size()) > limits_.max_stop_length) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop[", i, "]: ", r.stop[i].size(), " bytes, more than the limit of ",
                       limits_.max_stop_length, " (the server's --max-stop-length)"));
    }
  }
  for (int32_t id : r.stop_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop_token_ids: ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Engine::Impl::ValidateAndTokenize(
    const EngineRequest& r) const {
  // The cheap checks first: a request that fails them costs no tokenisation.
  RETURN_IF_ERROR(ValidateParams(r));
  const ModelConfig& c = model_->config();
  std::vector<int32_t> prompt = r.prompt_ids;
  if (prompt.empty() && !r.messages.empty()) {
    if (!chat_template_.has_value()) {
      return absl::FailedPreconditionError(
          "messages: this model's tokenizer has no <|im_start|>/<|im_end|> tokens, so it has no "
          "chat template; send a prompt instead");
    }
    ASSIGN_OR_RETURN(prompt, chat_template_->Apply(r.messages, r.add_generation_prompt));
  } else if (prompt.empty()) {
    if (r.prompt_text.empty()) return absl::InvalidArgumentError("prompt: the prompt is empty");
    auto ids = tokenizer_->Encode(r.prompt_text, r.allow_special);
    if (!ids.ok())
      return absl::InvalidArgumentError(absl::StrCat("prompt: ", ids.status().message()));
    prompt = *std::move(ids);
    if (prompt.empty()) return absl::InvalidArgumentError("prompt: the prompt has no tokens");
  }
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt: token id ", prompt[i], " at index ",
                                                     i, " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  if (static_cast<int64_t>(prompt.size()) > limits_.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt: ", prompt.size(), " tokens, more than the limit of ", limits_.max_prompt_tokens,
        limits_.max_prompt_tokens == limits_.max_model_len - 1
            ? absl::StrCat(" (max_model_len ", limits_.max_model_len, " leaves room for one token)")
            : std::string(" (the server's --max-prompt-tokens)")));
  }
  return prompt;
}

absl::StatusOr<std::string> Engine::Impl::Submit(EngineRequest request, OutputSink sink) {
  // Tokenise outside the lock: it is the costly part and needs no shared state.
  auto prompt = ValidateAndTokenize(request);
  if (!prompt.ok()) {
    metrics_->OnRejected();
    return prompt.status();
  }
  std::unique_lock<std::mutex> lock(mu_);
  absl::Status refused;
  if (failed_) {
    refused = absl::UnavailableError("the engine failed and is restarting");
  } else if (!accepting_) {
    refused = absl::UnavailableError("the server is shutting down");
  } else if (num_queued_ >=
             options_.max_queue + std::max<int64_t>(0, options_.max_seqs - admitted_slots_)) {
    refused = absl::ResourceExhaustedError(absl::StrCat("the waiting queue is full (max_queue ",
                                                        options_.max_queue, ", max_seqs ",
                                                        options_.max_seqs, " running)"));
  } else if (request.request_id.empty()) {
    do {
      request.request_id = absl::StrCat("req-", next_id_++);
    } while (active_ids_.contains(request.request_id));
  } else if (active_ids_.contains(request.request_id)) {
    refused = absl::AlreadyExistsError(
        absl::StrCat("request_id '", request.request_id, "' is already in flight"));
  }
  if (!refused.ok()) {
    lock.unlock();
    metrics_->OnRejected();
    return refused;
  }
  const std::string id = request.request_id;
  active_ids_.emplace(id, request.owner);
  ++num_queued_;
  auto group =
      std::make_shared<RequestGroup>(std::move(request), *std::move(prompt), std::move(sink));
  incoming_.push_back(
      std::make_unique<Sequence>(std::move(group), tokenizer_.get(), next_arrival_++));
  lock.unlock();
  work_cv_.notify_one();
  return id;
}

void Engine::Impl::Cancel(const std::string& id, uint64_t owner) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_ids_.find(id);
    if (it == active_ids_.end() || (owner != 0 && it->second != owner)) return;
    cancels_.push_back(id);
  }
  work_cv_.notify_one();
}

void Engine::Impl::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

void Engine::Impl::Shutdown(std::chrono::milliseconds grace) {
  StopAccepting();
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait_for(lock, grace, [&] { return active_ids_.empty(); });
  cancel_all_ = true;
  stop_ = true;
  lock.unlock();
  work_cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Engine::Impl::Loop() {
  while (true) {
    std::vector<std::unique_ptr<Sequence>> incoming;
    std::vector<std::string> cancels;
    bool cancel_all = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] {
        return stop_ || cancel_all_ || !incoming_.empty() || !cancels_.empty() || !seqs_.empty();
      });
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      cancel_all = cancel_all_;
      if (stop_ && seqs_.empty() && incoming.empty()) return;
    }
    for (auto& seq : incoming) {
      Sequence* s = seq.get();
      seqs_[s] = std::move(seq);
      scheduler_.Add(s);
    }
    ApplyCancellations(cancels, cancel_all);
    if (!seqs_.empty()) Step();
    PublishStats();
  }
}

void Engine::Impl::ApplyCancellations(const std::vector<std::string>& cancels, bool cancel_all) {
  const std::unordered_set<std::string> cancelled(cancels.begin(), cancels.end());
  const Clock::time_point now = Clock::now();
  std::vector<Sequence*> done;
  for (auto& [ptr, seq] : seqs_) {
    if (!seq->cancel_requested && cancelled.count(seq->id())) {
      seq->cancel_requested = true;
      seq->cancel_status = absl::CancelledError("the request was cancelled");
    }
    if (cancel_all && !seq->cancel_requested) {
      seq->cancel_requested = true;
      seq->cancel_status = absl::UnavailableError("the server is shutting down");
    }
    if (!seq->cancel_requested && seq->request().deadline && now >= *seq->request().deadline) {
      seq->cancel_requested = true;
      seq->cancel_status = absl::DeadlineExceededError("the request's deadline passed");
    }
    if (seq->cancel_requested) done.push_back(seq.get());
  }
  // Arrival order, choice order: the messages of a request stay in a stable order.
  std::sort(done.begin(), done.end(), ArrivalThenChoice);
  for (Sequence* seq : done) {
    FinishSequence(seq, seq->Finish(FinishReason::kCancelled, seq->cancel_status, ""));
  }
}

void Engine::Impl::FinishSequence(Sequence* seq, RequestOutput out) {
  if (!seq->first_scheduled) MarkAdmitted(seq);
  scheduler_.Remove(seq);
  RequestGroup& group = seq->group();
  if (!group.forked && seq->request().n > 1) {
    // Ended before its other choices existed (cancelled, failed): they end with it, unborn.
    group.forked = true;
    group.unfinished = 1;
  }
  group.completion_tokens += seq->output_len();
  out.request_finished = --group.unfinished == 0;
  if (out.request_finished) {
    metrics_->OnRequestFinished(out.finish_reason, Seconds(Clock::now() - group.arrival),
                                seq->prompt_len(), group.completion_tokens);
  }
  // Usage and the request id are released before the final output, so whoever gets it sees
  // the memory freed and may reuse the id at once.
  metrics_->OnUsage(UsageStats());
  PublishStats();
  if (out.request_finished) {
    std::lock_guard<std::mutex> lock(mu_);
    active_ids_.erase(seq->id());
    admitted_slots_ -= seq->request().n;
    // A Cancel that came during this request's last step was for this request: it must not
    // reach a new one that reuses the id once the final output is out.
    cancels_.erase(std::remove(cancels_.begin(), cancels_.end(), seq->id()), cancels_.end());
    if (active_ids_.empty()) idle_cv_.notify_all();
  }
  seq->Emit(std::move(out));
  seqs_.erase(seq);  // destroys seq
}

void Engine::Impl::MarkAdmitted(Sequence* seq) {
  seq->first_scheduled = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  --num_queued_;
  admitted_slots_ += seq->request().n;
}

void Engine::Impl::Step() {
  const Clock::time_point start = Clock::now();
  SchedulePlan plan = scheduler_.Schedule();
  for (size_t i = 0; i < plan.preempted.size(); ++i) {
    metrics_->OnPreemption();
    ++preemptions_;
  }
  for (Sequence* seq : plan.unservable) {
    FinishSequence(seq,
                   seq->Finish(seq->output_len() > 0 ? FinishReason::kLength : FinishReason::kError,
                               seq->output_len() > 0
                                   ? absl::OkStatus()
                                   : absl::ResourceExhaustedError(
                                         "the prompt needs more cache memory than the server has"),
                               ""));
  }
  if (plan.chunks.empty()) return;

  ForwardBatch batch;
  for (const ScheduledChunk& c : plan.chunks) {
    Sequence* seq = c.seq;
    if (!seq->first_scheduled) {
      MarkAdmitted(seq);
      metrics_->OnQueueTime(Seconds(start - seq->group().arrival));
    }
    for (int64_t i = 0; i < c.num_tokens; ++i)
      batch.token_ids.push_back(seq->token(seq->num_computed() + i));
    batch.seqs.push_back({&seq->memory(), seq->num_computed(), c.num_tokens, false});
  }
  PublishStats();  // the admissions of this step are visible before its tokens are
  // A backend that samples on its device gets the whole step (only tokens come back), unless
  // a request asks for something it cannot do (then the logits come to the CPU sampler).
  ForwardBackend* device = model_->backend();
  bool device_sampling = device != nullptr;
  for (const ScheduledChunk& c : plan.chunks) {
    if (device_sampling && c.sample) device_sampling = device->CanSample(c.seq->request().sampling);
  }
  absl::Status status =
      options_.fail_forward_after_steps > 0 && steps_ >= options_.fail_forward_after_steps
          ? absl::InternalError("injected fault (--test-fail-after-steps)")
      : device_sampling ? model_->ForwardKeepLogits(batch, *memory_)
                        : model_->Forward(batch, *memory_, &logits_);
  ++steps_;
  if (!status.ok()) {
    Fail(absl::InternalError(absl::StrCat("forward pass failed: ", status.message())));
    return;
  }
  const int32_t vocab = model_->config().vocab_size;
  const Clock::time_point now = Clock::now();
  // The step is reported before any of its outputs is delivered: a client that has its last
  // token and then finds the server idle must find this step in the histograms too.
  StepStats stats = UsageStats();
  stats.batch_tokens = static_cast<int64_t>(batch.token_ids.size());
  stats.batch_sequences = static_cast<int64_t>(batch.seqs.size());
  stats.step_seconds = Seconds(now - start);
  metrics_->OnStep(stats);
  std::vector<std::pair<Sequence*, int64_t>> to_sample;  // device sampling: (choice, row)
  for (size_t row = 0; row < plan.chunks.size(); ++row) {
    const ScheduledChunk& c = plan.chunks[row];
    Sequence* seq = c.seq;
    const int64_t prompt_part = std::max<int64_t>(
        0, std::min(seq->prompt_len(), seq->num_computed() + c.num_tokens) - seq->num_computed());
    prompt_tokens_computed_ += prompt_part;
    seq->AddComputed(c.num_tokens);
    if (!c.sample) continue;
    // Every choice of a request samples its first token from the same prompt logits.
    std::vector<Sequence*> choices = {seq};
    if (seq->will_fork()) {
      std::vector<Sequence*> forked = ForkChoices(seq);
      choices.insert(choices.end(), forked.begin(), forked.end());
    }
    // Counted before the tokens are delivered: a client that has its last token (and then
    // finds the server idle) must find it in the counter too. Counting after the whole step
    // let a scrape in between miss the step's tokens (seen under TSan's slower timing).
    metrics_->OnGenerationTokens(static_cast<int64_t>(choices.size()));
    if (device_sampling) {
      for (Sequence* choice : choices) to_sample.emplace_back(choice, static_cast<int64_t>(row));
      continue;
    }
    const float* row_logits = logits_.data() + row * vocab;
    for (Sequence* choice : choices) SampleNext(choice, row_logits, now);
  }
  if (!device_sampling || to_sample.empty()) return;
  std::vector<ForwardBackend::SampleSpec> specs;
  specs.reserve(to_sample.size());
  for (const auto& [choice, row] : to_sample) {
    ForwardBackend::SampleSpec spec;
    spec.row = row;
    spec.params = &choice->request().sampling;
    spec.context = choice->sampling_context(eos_ids_);
    const uint64_t seed = choice->request().sampling.seed;
    spec.seed = choice->index() == 0
                    ? seed
                    : SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(choice->index())));
    spec.step = static_cast<uint64_t>(choice->output_len());
    specs.push_back(spec);
  }
  std::vector<SampledToken> tokens;
  if (absl::Status s = device->SampleLast(specs, &tokens); !s.ok()) {
    Fail(absl::InternalError(absl::StrCat("sampling on the device failed: ", s.message())));
    return;
  }
  for (size_t i = 0; i < to_sample.size(); ++i) Deliver(to_sample[i].first, tokens[i], now);
}

std::vector<Sequence*> Engine::Impl::ForkChoices(Sequence* seq) {
  RequestGroup& group = seq->group();
  group.forked = true;
  std::vector<Sequence*> out;
  for (int32_t i = 1; i < seq->request().n; ++i) {
    std::unique_ptr<Sequence> child = seq->ForkChoice(i);
    Sequence* c = child.get();
    seqs_[c] = std::move(child);
    if (scheduler_.num_running() < options_.max_seqs &&
        memory_->CanReserve(c->memory(), c->total_len())) {
      memory_->Fork(seq->memory(), c->memory(), c->num_computed());
      scheduler_.AddRunning(c);
    } else {
      // No room now: it waits, like a preempted sequence, and computes the prompt itself.
      c->ResetComputed();
      scheduler_.Add(c);
    }
    out.push_back(c);
  }
  return out;
}

void Engine::Impl::SampleNext(Sequence* seq, const float* logits, Clock::time_point now) {
  const EngineRequest& r = seq->request();
  const int32_t vocab = model_->config().vocab_size;
  const SampledToken token =
      sampler_.Sample(logits, vocab, r.sampling, seq->sampling_context(eos_ids_), seq->rng());
  Deliver(seq, token, now);
}

void Engine::Impl::Deliver(Sequence* seq, const SampledToken& token, Clock::time_point now) {
  const EngineRequest& r = seq->request();
  RequestGroup& group = seq->group();
  if (seq->index() == 0 && seq->output_len() == 0) metrics_->OnPromptTokens(seq->prompt_len());
  RequestOutput out = seq->AppendToken(token);
  if (seq->last_token_time) {
    metrics_->OnInterTokenLatency(Seconds(now - *seq->last_token_time));
  } else if (!group.first_token_reported) {
    group.first_token_reported = true;
    metrics_->OnFirstToken(Seconds(now - group.arrival));
  }
  seq->last_token_time = now;

  std::optional<FinishReason> finish;
  std::string stop_reason;
  const bool may_stop = seq->output_len() >= r.min_tokens;
  const bool eos =
      !r.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token.id) != eos_ids_.end();
  const bool stop_id = std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), token.id) !=
                       r.stop_token_ids.end();
  if (seq->stopped_by_string()) {
    finish = FinishReason::kStop;
    stop_reason = seq->matched_stop();
  } else if (may_stop && (eos || stop_id)) {
    finish = FinishReason::kStop;
    stop_reason = std::to_string(token.id);
  } else if (seq->output_len() >= r.max_tokens || seq->total_len() >= limits_.max_model_len) {
    finish = FinishReason::kLength;
  }
  if (!finish) {
    seq->Emit(std::move(out));
    return;
  }
  // The last message carries the last token and the finish together.
  RequestOutput last = seq->Finish(*finish, absl::OkStatus(), stop_reason);
  last.token_ids = std::move(out.token_ids);
  last.logprobs = std::move(out.logprobs);
  last.text = out.text + last.text;
  FinishSequence(seq, std::move(last));
}

void Engine::Impl::Fail(const absl::Status& status) {
  // The model's state is suspect after a failed step (device error, corrupted memory): no
  // request may go on, and none may start. The server restarts the process.
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    failed_ = true;
  }
  std::vector<Sequence*> all;
  for (auto& [ptr, seq] : seqs_) all.push_back(ptr);
  std::sort(all.begin(), all.end(), ArrivalThenChoice);
  for (Sequence* seq : all) FinishSequence(seq, seq->Finish(FinishReason::kError, status, ""));
  if (options_.on_fatal_error) options_.on_fatal_error(status);
}

StepStats Engine::Impl::UsageStats() const {
  StepStats stats;
  stats.num_running = scheduler_.num_running();
  stats.num_waiting = scheduler_.num_waiting();
  stats.kv_usage = UsageFraction(memory_->paged_kv());
  stats.state_slot_usage = UsageFraction(memory_->state_slots());
  stats.window_ring_usage = UsageFraction(memory_->window_rings());
  return stats;
}

void Engine::Impl::PublishStats() {
  EngineStats s;
  s.num_running = scheduler_.num_running();
  int64_t preempted = 0;
  for (const Sequence* seq : scheduler_.waiting()) preempted += seq->first_scheduled.has_value();
  for (const auto& u : memory_->Usage()) s.pools.push_back({u.name, u.usage.used, u.usage.total});
  s.steps = steps_;
  s.prompt_tokens_computed = prompt_tokens_computed_;
  s.preemptions = preemptions_;
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = std::move(s);
  preempted_waiting_ = preempted;
}

// ---- Engine ----

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<Model> model,
                                                       std::unique_ptr<Tokenizer> tokenizer,
                                                       const EngineOptions& options,
                                                       EngineMetrics* metrics) {
  if (options.max_seqs < 1 || options.max_batch_tokens < 1 || options.max_queue < 0 ||
      options.page_size < 1 || options.max_logprobs < 0 || options.max_n < 1 ||
      options.max_prompt_tokens < 0 || options.max_output_tokens < 0 ||
      options.max_stop_strings < 0 || options.max_stop_length < 1) {
    return absl::InvalidArgumentError(
        "max_seqs, max_batch_tokens, page_size, max_n and max_stop_length must be >= 1; "
        "max_queue, max_logprobs, max_prompt_tokens, max_output_tokens and max_stop_strings "
        ">= 0");
  }
  const ModelConfig& config = model->config();
  MemoryOptions mem;
  mem.max_seqs = options.max_seqs;
  mem.page_size = options.page_size;
  mem.budget_bytes = options.memory_bytes;
  mem.host_storage = model->needs_host_cache();
  mem.kv_element_bytes = model->kv_element_bytes();
  ASSIGN_OR_RETURN(std::unique_ptr<HybridMemory> memory, HybridMemory::Create(config, mem));
  RETURN_IF_ERROR(model->AttachMemory(*memory));

  EngineLimits limits;
  limits.max_model_len = config.max_position_embeddings;
  if (options.max_model_len > 0)
    limits.max_model_len = std::min(limits.max_model_len, options.max_model_len);
  if (PagedKvPool* kv = memory->paged_kv(); kv != nullptr) {
    // One sequence must always fit in the KV pool, or it could never finish.
    limits.max_model_len = std::min(limits.max_model_len, kv->Usage().total * options.page_size);
  }
  if (limits.max_model_len < 2) {
    return absl::InvalidArgumentError("the memory budget leaves room for fewer than 2 positions");
  }
  limits.max_seqs = options.max_seqs;
  limits.max_batch_tokens = options.max_batch_tokens;
  limits.max_queue = options.max_queue;
  limits.max_logprobs = std::min<int32_t>(options.max_logprobs, config.vocab_size);
  limits.max_n = options.max_n;
  limits.max_prompt_tokens = limits.max_model_len - 1;
  if (options.max_prompt_tokens > 0)
    limits.max_prompt_tokens = std::min(limits.max_prompt_tokens, options.max_prompt_tokens);
  limits.max_output_tokens = limits.max_model_len;
  if (options.max_output_tokens > 0)
    limits.max_output_tokens = std::min(limits.max_output_tokens, options.max_output_tokens);
  limits.max_stop_strings = options.max_stop_strings;
  limits.max_stop_length = options.max_stop_length;
  // An unrecognised chat template is a start-up error, never a silently wrong prompt. A
  // tokenizer without ChatML's tokens (not a chat model) serves prompts only.
  std::optional<ChatTemplate> chat_template;
  if (tokenizer->TokenId("<|im_start|>") >= 0 && tokenizer->TokenId("<|im_end|>") >= 0) {
    ASSIGN_OR_RETURN(chat_template,
                     ChatTemplate::FromCheckpointDir(model->checkpoint().dir(), *tokenizer));
  }
  auto impl =
      std::make_unique<Impl>(std::move(model), std::move(tokenizer), std::move(chat_template),
                             std::move(memory), options, limits, metrics);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadCheckpointTokenizer(const std::string& dir,
                                                                   const ModelConfig& config) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::LoadFromDir(dir));
  if (tokenizer->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": the tokenizer's ids go up to ", tokenizer->vocab_size() - 1,
                     " but the model's vocab_size is ", config.vocab_size,
                     ": tokenizer.json belongs to another model"));
  }
  return tokenizer;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<std::string> Engine::Submit(EngineRequest request, OutputSink sink) {
  return impl_->Submit(std::move(request), std::move(sink));
}
void Engine::Cancel(const std::string& request_id, uint64_t owner) {
  impl_->Cancel(request_id, owner);
}

uint64_t Engine::NewOwner() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}
void Engine::StopAccepting() { impl_->StopAccepting(); }
void Engine::Shutdown(std::chrono::milliseconds grace) { impl_->Shutdown(grace); }
bool Engine::accepting() const { return impl_->accepting(); }
EngineStats Engine::Stats() const { return impl_->Stats(); }
EngineLimits Engine::limits() const { return impl_->limits(); }
const ModelConfig& Engine::config() const { return impl_->model().config(); }
const Tokenizer& Engine::tokenizer() const { return impl_->tokenizer(); }
const ChatTemplate* Engine::chat_template() const { return impl_->chat_template(); }
std::string Engine::model_name() const {
  std::filesystem::path dir =
      std::filesystem::path(impl_->model().checkpoint().dir()).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "models/jet/" -> "jet"
  return dir.filename().string();
}

}  // namespace jetserve
