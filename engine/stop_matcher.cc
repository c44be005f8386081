#include "engine/stop_matcher.h"

#include <algorithm>

namespace jetserve {

StopMatcher::StopMatcher(std::vector<std::string> stops, bool include_stop_in_output)
    : stops_(std::move(stops)), include_(include_stop_in_output) {
  for (const std::string& s : stops_) max_len_ = std::max(max_len_, s.size());
}

std::string StopMatcher::Add(std::string_view text, bool may_stop) {
  if (stopped_) return "";
  if (stops_.empty()) return std::string(text);
  pending_.append(text);
  // The earliest stop string occurrence wins; only one that ends in text added with may_stop
  // counts (held-back text from before min_tokens may hold a complete, shorter stop string).
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const std::string& s : stops_) {
    if (!may_stop) break;
    const size_t from = let_through_ >= s.size() ? let_through_ - s.size() + 1 : 0;
    const size_t at = pending_.find(s, from);
    if (at != std::string::npos && (at < best || (at == best && s.size() > best_stop->size()))) {
      best = at;
      best_stop = &s;
    }
  }
  if (best_stop != nullptr) {
    stopped_ = true;
    matched_ = *best_stop;
    std::string out = pending_.substr(0, best + (include_ ? best_stop->size() : 0));
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (size_t len = std::min(max_len_ - 1, pending_.size()); len > 0; --len) {
    const std::string_view suffix(pending_.data() + pending_.size() - len, len);
    const bool is_prefix = std::any_of(stops_.begin(), stops_.end(), [&](const std::string& s) {
      return s.size() > len && std::string_view(s).substr(0, len) == suffix;
    });
    if (is_prefix) {
      keep = len;
      break;
    }
  }
  const size_t emitted = pending_.size() - keep;
  std::string out = pending_.substr(0, emitted);
  pending_.erase(0, emitted);
  // Before min_tokens everything still held was let through; after, what was stays so.
  let_through_ = may_stop ? let_through_ - std::min(let_through_, emitted) : keep;
  return out;
}

std::string StopMatcher::Flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  return out;
}

}  // namespace jetserve
