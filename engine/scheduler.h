// Iteration-level (continuous) batching. Each step mixes the decode tokens of running sequences
// with chunks of prompts under a token budget and a sequence limit:
//   1. running sequences, oldest first, each get what they still need (1 token when decoding,
//      a chunk when prefilling) while the budget lasts, growing their KV pages as they go;
//      when pages run out, the newest running sequences are preempted (memory freed, tokens
//      recomputed later) so the oldest can go on;
//   2. waiting sequences are admitted strictly first-come-first-served while there is a free
//      sequence slot, budget, and memory for their whole current token list: the head of the
//      queue is never overtaken, so nothing starves. A request with n > 1 choices is admitted
//      with room for all n (sequence slots and memory), so that its choices can share its
//      prefill, and that room stays pledged (later admissions leave it free) until its first
//      choice finishes the prompt and the others are made; when n can never fit together it is
//      admitted alone once nothing else runs.
// The scheduler owns no sequences; the engine adds, removes and finishes them.
#ifndef JETSERVE_ENGINE_SCHEDULER_H_
#define JETSERVE_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/memory/hybrid_memory.h"
#include "engine/sequence.h"

namespace jetserve {

struct SchedulerOptions {
  int64_t max_seqs = 32;
  int64_t max_batch_tokens = 512;
};

struct ScheduledChunk {
  Sequence* seq = nullptr;
  int64_t num_tokens = 0;  // tokens [num_computed, num_computed + num_tokens) this step
  bool sample = false;     // the chunk reaches the end of the sequence: sample the next token
};

struct SchedulePlan {
  std::vector<ScheduledChunk> chunks;
  std::vector<Sequence*> preempted;  // sent back to the queue this step
  // Sequences that can never run: their tokens need more memory than the whole pool has.
  std::vector<Sequence*> unservable;
};

class Scheduler {
 public:
  Scheduler(HybridMemory* memory, const SchedulerOptions& options);

  // Queues a new sequence (in arrival order).
  void Add(Sequence* seq);
  // Adds a sequence that already holds its memory (a forked choice) as running, newest.
  void AddRunning(Sequence* seq);
  // Drops a sequence wherever it is and returns its memory.
  void Remove(Sequence* seq);

  SchedulePlan Schedule();

  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const std::vector<Sequence*>& running() const { return running_; }

 private:
  void Preempt(Sequence* seq);
  void Requeue(Sequence* seq);  // into waiting_, keeping arrival order

  HybridMemory* memory_;
  SchedulerOptions options_;
  std::deque<Sequence*> waiting_;   // arrival order
  std::vector<Sequence*> running_;  // admission order, oldest first
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_SCHEDULER_H_
