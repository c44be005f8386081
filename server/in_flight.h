// Counts work in flight (a completion being answered, a Generate stream being written), so that
// shutdown can wait for it to end before it stops the servers that carry it.
#ifndef JETSERVE_SERVER_IN_FLIGHT_H_
#define JETSERVE_SERVER_IN_FLIGHT_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace jetserve {

class InFlightCounter {
 public:
  // Held while the work is in flight; the count drops when the last copy goes. The counter
  // must outlive every token.
  using Token = std::shared_ptr<void>;
  Token Track() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++count_;
    }
    return Token(nullptr, [this](void*) {
      std::lock_guard<std::mutex> lock(mu_);
      if (--count_ == 0) cv_.notify_all();
    });
  }

  // Waits until nothing is in flight, or the deadline. True when nothing is.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return count_ == 0; });
  }

  int64_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

 private:
  // std::mutex: visible to ThreadSanitizer (Debian's Abseil is not instrumented).
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace jetserve

#endif  // JETSERVE_SERVER_IN_FLIGHT_H_
