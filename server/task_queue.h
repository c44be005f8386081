// A FIFO of tasks run by a few threads of its own. The gRPC streams' writes go through one so
// that the engine's step thread never does network I/O: a StartWrite made outside gRPC's own
// threads runs the write inline (the HTTP/2 framing, sendmsg, waking the poller), and the step
// thread making one per stream per token spent 95% of its time there at batch 768
// (docs/performance.md, "The server's own overhead").
#ifndef JETSERVE_SERVER_TASK_QUEUE_H_
#define JETSERVE_SERVER_TASK_QUEUE_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace jetserve {

class TaskQueue {
 public:
  // Starts `threads` threads (at least one).
  explicit TaskQueue(int threads);
  // Runs what is still queued, then joins the threads. Nothing may be posted meanwhile.
  ~TaskQueue();
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  // Queues `task`; it runs on one of the queue's threads, tasks in the order posted (with more
  // than one thread, two may run at once). Cheap for the caller: no system call when every
  // thread is busy.
  void Post(std::function<void()> task);

 private:
  void Run();

  // std::mutex, not absl::Mutex: Debian's Abseil is not built with ThreadSanitizer, which then
  // cannot see the ordering an absl::Mutex gives (the engine uses std::mutex for the same reason).
  std::mutex mu_;
  std::condition_variable work_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace jetserve

#endif  // JETSERVE_SERVER_TASK_QUEUE_H_
