// StopMatcher: stop strings split across calls are caught and never streamed, the earliest
// (then longest) wins, held-back text is released when it cannot start a stop any more, and
// before min_tokens (may_stop false) complete stop strings are let through for good.
#include "engine/stop_matcher.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace jetserve {
namespace {

// Feeds `pieces` (may_stop for all from index `may_stop_from`), returns the emitted text plus
// what Flush gives when nothing stopped.
std::string Feed(StopMatcher& m, const std::vector<std::string>& pieces, size_t may_stop_from = 0) {
  std::string out;
  for (size_t i = 0; i < pieces.size(); ++i) out += m.Add(pieces[i], i >= may_stop_from);
  if (!m.stopped()) out += m.Flush();
  return out;
}

TEST(StopMatcherTest, StopSplitAcrossPiecesIsCaughtAndNotStreamed) {
  StopMatcher m({"END"}, false);
  EXPECT_EQ(m.Add("abc E"), "abc ");  // "E" may start the stop: held back
  EXPECT_EQ(m.Add("N"), "");
  EXPECT_EQ(m.Add("Dxyz"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "END");
  EXPECT_EQ(m.Add("more"), "");  // nothing after a stop
}

TEST(StopMatcherTest, IncludeStopInOutput) {
  StopMatcher m({"END"}, true);
  EXPECT_EQ(Feed(m, {"ab", "EN", "D!"}), "abEND");
}

TEST(StopMatcherTest, EarliestThenLongestWins) {
  StopMatcher earliest({"cd", "bcde"}, false);
  EXPECT_EQ(Feed(earliest, {"abcdef"}), "a");
  EXPECT_EQ(earliest.matched(), "bcde");
  StopMatcher longest({"ab", "abc"}, false);
  EXPECT_EQ(Feed(longest, {"xabcz"}), "x");
  EXPECT_EQ(longest.matched(), "abc");
}

TEST(StopMatcherTest, HeldBackTextIsReleasedWhenItCannotStartAStop) {
  StopMatcher m({"END"}, false);
  EXPECT_EQ(m.Add("xE"), "x");
  EXPECT_EQ(m.Add("Nq"), "ENq");  // "ENq" starts no stop
  EXPECT_EQ(m.Add("E"), "");
  EXPECT_EQ(m.Flush(), "E");  // the end of generation releases it
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcherTest, BeforeMinTokensCompleteStopsAreLetThrough) {
  StopMatcher m({"ab"}, false);
  EXPECT_EQ(Feed(m, {"a", "b", "x"}, /*may_stop_from=*/2), "abx");
  EXPECT_FALSE(m.stopped());
}

// A stop completed before min_tokens stays let through even when it is also the start of a
// longer stop string (and so was still held back when min_tokens was reached).
TEST(StopMatcherTest, StopLetThroughBeforeMinTokensDoesNotMatchLater) {
  StopMatcher m({"ab", "abc"}, false);
  EXPECT_EQ(Feed(m, {"a", "b", "x"}, /*may_stop_from=*/2), "abx");
  EXPECT_FALSE(m.stopped());
  // The longer one, completed after min_tokens, still stops.
  StopMatcher longer({"ab", "abc"}, false);
  EXPECT_EQ(Feed(longer, {"a", "b", "c", "z"}, /*may_stop_from=*/2), "");
  EXPECT_TRUE(longer.stopped());
  EXPECT_EQ(longer.matched(), "abc");
}

// A stop string that starts before min_tokens and ends after it counts (as vLLM's does).
TEST(StopMatcherTest, StopSpanningMinTokensCounts) {
  StopMatcher m({"END"}, false);
  EXPECT_EQ(Feed(m, {"xE", "ND", "y"}, /*may_stop_from=*/1), "x");
  EXPECT_TRUE(m.stopped());
  // And one let through earlier does not hide a later occurrence.
  StopMatcher again({"ab", "abc"}, false);
  EXPECT_EQ(Feed(again, {"ab", "ab", "!"}, /*may_stop_from=*/1), "ab");
  EXPECT_TRUE(again.stopped());
  EXPECT_EQ(again.matched(), "ab");
}

}  // namespace
}  // namespace jetserve
