// A stack of free unit indices, shared by the pools. Lowest indices are handed out first.
#ifndef JETSERVE_ENGINE_MEMORY_FREE_LIST_H_
#define JETSERVE_ENGINE_MEMORY_FREE_LIST_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace jetserve {

class FreeList {
 public:
  explicit FreeList(int64_t n) : total_(n), in_use_(n, false) {
    free_.reserve(n);
    for (int64_t i = n - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
  }
  int64_t total() const { return total_; }
  int64_t free() const { return static_cast<int64_t>(free_.size()); }
  int64_t used() const { return total_ - free(); }
  int32_t Take() {
    if (free_.empty()) Die("Take from an empty pool");
    const int32_t i = free_.back();
    free_.pop_back();
    in_use_[i] = true;
    return i;
  }
  void Give(int32_t i) {
    if (i < 0 || i >= total_ || !in_use_[i]) Die("Give of a unit that is not in use");
    in_use_[i] = false;
    free_.push_back(i);
  }

 private:
  // Misuse is a bug in the caller that would corrupt another request's memory: stop at once.
  [[noreturn]] static void Die(const char* what) {
    std::fprintf(stderr, "jetserve: internal error in FreeList: %s\n", what);
    std::abort();
  }
  int64_t total_;
  std::vector<bool> in_use_;
  std::vector<int32_t> free_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_MEMORY_FREE_LIST_H_
