#include "engine/scheduler.h"

#include <algorithm>

namespace jetserve {

Scheduler::Scheduler(HybridMemory* memory, const SchedulerOptions& options)
    : memory_(memory), options_(options) {}

void Scheduler::Add(Sequence* seq) { Requeue(seq); }

void Scheduler::AddRunning(Sequence* seq) { running_.push_back(seq); }

void Scheduler::Requeue(Sequence* seq) {
  auto it = std::upper_bound(waiting_.begin(), waiting_.end(), seq, [](Sequence* a, Sequence* b) {
    return a->arrival_order() < b->arrival_order();
  });
  waiting_.insert(it, seq);
}

void Scheduler::Remove(Sequence* seq) {
  memory_->Release(seq->memory());
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
}

void Scheduler::Preempt(Sequence* seq) {
  memory_->Release(seq->memory());
  seq->ResetComputed();
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  Requeue(seq);
}

SchedulePlan Scheduler::Schedule() {
  SchedulePlan plan;
  int64_t budget = options_.max_batch_tokens;

  // 1. Running sequences, oldest first. Those after index i are the preemption victims.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    const int64_t n = std::min(seq->num_uncomputed(), budget);
    const int64_t positions = seq->num_computed() + n;
    while (!memory_->CanReserve(seq->memory(), positions) && running_.size() > i + 1) {
      Sequence* victim = running_.back();
      Preempt(victim);
      plan.preempted.push_back(victim);
    }
    if (!memory_->CanReserve(seq->memory(), positions)) {
      // Even alone among the unscheduled it does not fit: wait for the older ones to finish,
      // or, when it is the oldest, it can never fit.
      if (i == 0) {
        plan.unservable.push_back(seq);
        running_.erase(running_.begin());
        memory_->Release(seq->memory());
      } else {
        Preempt(seq);
        plan.preempted.push_back(seq);
      }
      continue;
    }
    memory_->Reserve(seq->memory(), positions);
    plan.chunks.push_back({seq, n, n == seq->num_uncomputed()});
    budget -= n;
    ++i;
  }

  // The room running n > 1 requests were admitted with for their other choices, which exist
  // only once the first choice has finished the prompt: admissions must leave it free, or a
  // later request takes it and those choices compute the prompt again.
  // The sequences a request's choices take together (at most all of them).
  auto copies_of = [&](const Sequence* seq) {
    return std::min<int64_t>(seq->request().n, options_.max_seqs);
  };
  int64_t pledged_seqs = 0;
  HybridMemory::Pledge pledged;
  auto pledge = [&](const Sequence* seq) {
    const int64_t others = copies_of(seq) - 1;
    pledged_seqs += others;
    memory_->AddToPledge(seq->total_len(), others, &pledged);
  };
  for (const Sequence* seq : running_) {
    if (seq->will_fork()) pledge(seq);
  }
  auto seqs_taken = [&] { return static_cast<int64_t>(running_.size()) + pledged_seqs; };

  // 2. Admit waiting sequences first-come-first-served; never overtake the head.
  while (!waiting_.empty() && budget > 0 && seqs_taken() < options_.max_seqs) {
    Sequence* seq = waiting_.front();
    if (seq->will_fork()) {
      // Room for every choice; or, when that can never be, for this one alone on an idle server
      // (the others then wait and compute the prompt themselves).
      const int64_t copies = copies_of(seq);
      const bool fits_all = seqs_taken() + copies <= options_.max_seqs &&
                            memory_->CanReserve(seq->memory(), seq->total_len(), copies, &pledged);
      if (!fits_all && !running_.empty()) break;
    }
    if (!memory_->CanReserve(seq->memory(), seq->total_len(), 1, &pledged)) {
      if (running_.empty()) {
        // Nothing will ever free enough memory for it.
        plan.unservable.push_back(seq);
        waiting_.pop_front();
        continue;
      }
      break;
    }
    // Room for every token it already has, so its prefill never stalls half-way.
    memory_->Reserve(seq->memory(), seq->total_len());
    waiting_.pop_front();
    running_.push_back(seq);
    if (seq->will_fork()) pledge(seq);
    const int64_t n = std::min(seq->num_uncomputed(), budget);
    plan.chunks.push_back({seq, n, n == seq->num_uncomputed()});
    budget -= n;
  }
  return plan;
}

}  // namespace jetserve
