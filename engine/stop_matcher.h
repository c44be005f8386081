// Stop strings over streamed text: text that might be the start of a stop string is held back
// until it is known not to be, so a stop string split across tokens is caught and (unless asked
// for) never streamed.
#ifndef JETSERVE_ENGINE_STOP_MATCHER_H_
#define JETSERVE_ENGINE_STOP_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace jetserve {

class StopMatcher {
 public:
  // Stop strings must be non-empty (validated by the engine).
  StopMatcher(std::vector<std::string> stops, bool include_stop_in_output);

  // Adds newly decoded text. Returns the text that can be emitted now. After a stop string
  // completes, stopped() is true, the returned text ends just before it (or just after it when
  // include_stop_in_output) and further calls return nothing. With may_stop false (before
  // min_tokens) complete stop strings are let through, but a possible start of one at the end
  // is still held back, so one completed by the next call is caught.
  std::string Add(std::string_view text, bool may_stop = true);
  // At the end of generation without a stop: the held-back text.
  std::string Flush();

  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  bool include_;
  size_t max_len_ = 0;
  std::string pending_;  // text not yet emitted: a possible start of a stop string
  // Bytes at the start of pending_ added with may_stop false: a stop string lying wholly in
  // them was let through, so a match must end past them.
  size_t let_through_ = 0;
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_STOP_MATCHER_H_
