// A persistent pool of worker threads for data-parallel loops. Threads are created once; a
// ParallelFor never creates threads or allocates on the heap (the loop body is passed by
// reference, never copied into a std::function).
#ifndef JETSERVE_KERNELS_CPU_THREAD_POOL_H_
#define JETSERVE_KERNELS_CPU_THREAD_POOL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace jetserve::kernels::cpu {

class ThreadPool {
 public:
  // num_threads includes the calling thread: a pool of 1 runs everything inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over a partition of [0, n) into contiguous ranges of at least `grain`
  // items; returns when all are done. The partition depends only on n, grain and the thread
  // count, and each index is processed by exactly one call. Calls from several threads are
  // serialised; a call from inside fn deadlocks.
  template <typename Fn>
  void ParallelFor(int64_t n, int64_t grain, Fn&& fn) {
    using F = std::remove_reference_t<Fn>;
    RangeFn ref{const_cast<void*>(static_cast<const void*>(&fn)),
                [](void* obj, int64_t b, int64_t e) { (*static_cast<F*>(obj))(b, e); }};
    Run(n, grain, ref);
  }

  // Calls fn(shard, num_shards, scratch) once for each of min(num_threads, max_shards) shards,
  // run concurrently. For loops that hand out work dynamically (an atomic counter) when items
  // cost unevenly or a core is shared with other processes; results must not depend on which
  // shard ran an item. `scratch` points to `scratch_floats` floats that belong to the shard for
  // the duration of the call: the pool allocates them on the calling thread the first time a
  // size is asked for, so no worker allocates in a later call (and no thread needs large
  // thread-local storage, which threads with small stacks could not hold).
  template <typename Fn>
  void RunOnAll(int64_t max_shards, int64_t scratch_floats, Fn&& fn) {
    const int64_t shards = std::max<int64_t>(1, std::min<int64_t>(max_shards, num_threads()));
    auto body = [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; ++s) fn(s, shards, shard_scratch_[s].data());
    };
    using F = decltype(body);
    RangeFn ref{static_cast<void*>(&body),
                [](void* obj, int64_t b, int64_t e) { (*static_cast<F*>(obj))(b, e); }};
    Run(shards, 1, ref, scratch_floats);
  }

  // The process-wide pool used by the CPU kernels (hardware concurrency threads, or
  // JETSERVE_NUM_THREADS when set).
  static ThreadPool& Default();

 private:
  // A non-owning reference to the loop body: no copy, no allocation.
  struct RangeFn {
    void* obj = nullptr;
    void (*call)(void*, int64_t, int64_t) = nullptr;
  };

  // scratch_floats > 0: make sure every shard has that much scratch (under call_mu_) first.
  void Run(int64_t n, int64_t grain, RangeFn fn, int64_t scratch_floats = 0);
  void WorkerLoop();
  // Claims the next unclaimed shard of generation `gen` and runs it; false when none is left
  // (or `gen` is over).
  bool RunOneShard(uint32_t gen);

  std::vector<std::thread> workers_;
  std::vector<std::vector<float>> shard_scratch_;  // [num_threads], grown under call_mu_
  std::mutex call_mu_;  // one ParallelFor at a time when several threads share the pool
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  // The current loop. Written by the caller before it publishes claim_; read by a thread only
  // after it has claimed one of its shards, which keeps the caller waiting until it is done.
  RangeFn fn_;
  int64_t n_ = 0;
  std::atomic<int64_t> shards_{0};
  // (generation << 32) | next unclaimed shard (0xffffffff while the caller sets up the loop).
  // Whoever comes first runs a shard, the caller included: when a worker is descheduled (more
  // runnable threads than cores), the caller runs its shards instead of waiting for it.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> completed_{0};  // shards of the current generation finished
  // Bumped for each ParallelFor. Workers spin on it briefly before sleeping, because a decode
  // step issues hundreds of short loops and a condition-variable wake-up costs tens of µs.
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};  // workers blocked on work_cv_
  bool stop_ = false;             // guarded by mu_
};

}  // namespace jetserve::kernels::cpu

#endif  // JETSERVE_KERNELS_CPU_THREAD_POOL_H_
