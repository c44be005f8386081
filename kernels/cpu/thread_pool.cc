#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <cstdlib>

namespace jetserve::kernels::cpu {
namespace {

// How long a worker (or the caller, waiting for workers) polls before blocking. Long enough to
// bridge the gap between the loops of one forward step, short enough not to steal a shared
// core from other processes for long when the engine is idle.
constexpr int kSpinIterations = 4000;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  const int workers = std::max(0, num_threads - 1);
  workers_.reserve(workers);
  shard_scratch_.resize(workers + 1);
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

bool ThreadPool::RunOneShard(uint32_t gen) {
  uint64_t cur = claim_.load(std::memory_order_acquire);
  while (true) {
    // Acquire: if this already reads the next loop's count, the caller's closing of claim_
    // (Run) happened before, so the compare-exchange below sees it and fails.
    const int64_t shards = shards_.load(std::memory_order_acquire);
    const int64_t shard = static_cast<int64_t>(cur & 0xffffffffu);
    if (static_cast<uint32_t>(cur >> 32) != gen || shard >= shards) return false;
    if (claim_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel)) {
      const int64_t begin = n_ * shard / shards;
      const int64_t end = n_ * (shard + 1) / shards;
      if (begin < end) fn_.call(fn_.obj, begin, end);
      if (completed_.fetch_add(1, std::memory_order_acq_rel) + 1 == shards) {
        // Under the lock, so the notification cannot fall between the caller's check and its
        // wait.
        std::lock_guard<std::mutex> lock(mu_);
        done_cv_.notify_all();
      }
      return true;
    }
  }
}

void ThreadPool::WorkerLoop() {
  uint32_t seen = 0;
  while (true) {
    bool ready = false;
    for (int i = 0; i < kSpinIterations; ++i) {
      if (generation_.load(std::memory_order_acquire) != seen) {
        ready = true;
        break;
      }
      CpuRelax();
    }
    if (!ready) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1, std::memory_order_relaxed);
      work_cv_.wait(lock,
                    [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
      if (stop_) return;
    }
    seen = generation_.load(std::memory_order_acquire);
    while (RunOneShard(seen)) {
    }
  }
}

void ThreadPool::Run(int64_t n, int64_t grain, RangeFn fn, int64_t scratch_floats) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t shards = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  std::unique_lock<std::mutex> call_lock(call_mu_, std::defer_lock);
  if (scratch_floats > 0) {
    // Shard scratch is shared state: even an inline call holds the lock while using it.
    call_lock.lock();
    for (std::vector<float>& s : shard_scratch_) {
      if (static_cast<int64_t>(s.size()) < scratch_floats) s.resize(scratch_floats);
    }
  }
  if (shards <= 1 || workers_.empty()) {
    fn.call(fn.obj, 0, n);
    return;
  }
  if (!call_lock.owns_lock()) call_lock.lock();
  const uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Close the claim word first. A thread of the previous loop that read its claim word
    // (generation, k) when all k shards were taken, and then read the count of this loop, would
    // otherwise still find (generation, k) there and "claim" a shard of a finished loop while
    // fn_ and n_ are being replaced (and count it into this loop's completed_).
    claim_.store((static_cast<uint64_t>(gen) << 32) | 0xffffffffu, std::memory_order_relaxed);
    fn_ = fn;
    n_ = n;
    shards_.store(shards, std::memory_order_release);
    completed_.store(0, std::memory_order_relaxed);
    claim_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
    generation_.store(gen, std::memory_order_release);
  }
  if (sleepers_.load(std::memory_order_relaxed) > 0) work_cv_.notify_all();
  while (RunOneShard(gen)) {
  }
  // Every shard is claimed; wait for those still running on workers.
  for (int i = 0; i < kSpinIterations; ++i) {
    if (completed_.load(std::memory_order_acquire) == shards) return;
    CpuRelax();
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return completed_.load(std::memory_order_acquire) == shards; });
}

ThreadPool& ThreadPool::Default() {
  static ThreadPool* pool = [] {
    int n = static_cast<int>(std::thread::hardware_concurrency());
    if (const char* env = std::getenv("JETSERVE_NUM_THREADS"); env != nullptr) {
      n = std::atoi(env);
    }
    return new ThreadPool(std::max(1, n));
  }();
  return *pool;
}

}  // namespace jetserve::kernels::cpu
