// TaskQueue: every task posted runs, on the queue's threads, in order on one thread, and the
// destructor runs what is still queued before it joins.
#include "server/task_queue.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace jetserve {
namespace {

TEST(TaskQueueTest, OneThreadRunsTasksInOrderOffTheCallersThread) {
  std::vector<int> order;  // written by the queue's one thread only
  std::vector<std::thread::id> runners;
  {
    TaskQueue queue(1);
    for (int i = 0; i < 100; ++i) {
      queue.Post([&order, &runners, i] {
        order.push_back(i);
        runners.push_back(std::this_thread::get_id());
      });
    }
  }  // joined: the writes above are visible
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
  for (const std::thread::id& id : runners) {
    EXPECT_NE(id, std::this_thread::get_id());
    EXPECT_EQ(id, runners[0]);
  }
}

TEST(TaskQueueTest, DestructorRunsWhatIsStillQueued) {
  absl::Notification release;
  std::atomic<int> ran{0};
  auto queue = std::make_unique<TaskQueue>(1);
  queue->Post([&] {
    release.WaitForNotification();  // holds the only thread while the rest is queued
    ++ran;
  });
  for (int i = 0; i < 50; ++i) queue->Post([&] { ++ran; });
  std::thread destroy([&] { queue.reset(); });
  release.Notify();
  destroy.join();
  EXPECT_EQ(ran.load(), 51);
}

TEST(TaskQueueTest, ManyThreadsAndPostersLoseNothing) {
  std::atomic<int> ran{0};
  {
    TaskQueue queue(4);
    std::vector<std::thread> posters;
    for (int p = 0; p < 3; ++p) {
      posters.emplace_back([&] {
        for (int i = 0; i < 2000; ++i) queue.Post([&] { ++ran; });
      });
    }
    for (std::thread& t : posters) t.join();
  }
  EXPECT_EQ(ran.load(), 6000);
}

TEST(TaskQueueTest, ZeroThreadsMeansOne) {
  std::atomic<int> ran{0};
  {
    TaskQueue queue(0);
    queue.Post([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 1);
}

}  // namespace
}  // namespace jetserve
