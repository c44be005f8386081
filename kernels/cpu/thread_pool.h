// A persistent pool of worker threads for data-parallel loops. Threads are created once; a
// ParallelFor never creates threads or allocates on the heap.
#ifndef JETSERVE_KERNELS_CPU_THREAD_POOL_H_
#define JETSERVE_KERNELS_CPU_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
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
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // The process-wide pool used by the CPU kernels (hardware concurrency threads, or
  // JETSERVE_NUM_THREADS when set).
  static ThreadPool& Default();

 private:
  void WorkerLoop(int index);
  void RunShard(int shard);

  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one ParallelFor at a time when several threads share the pool
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;  // guarded by mu_
  int64_t n_ = 0;
  int64_t shards_ = 0;
  int64_t generation_ = 0;  // bumps for each ParallelFor
  int pending_ = 0;         // workers still running the current generation
  bool stop_ = false;
};

}  // namespace jetserve::kernels::cpu

#endif  // JETSERVE_KERNELS_CPU_THREAD_POOL_H_
