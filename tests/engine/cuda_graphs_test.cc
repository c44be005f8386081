// The decode-graph buckets (engine/cuda_graphs.h): host arithmetic, checked without a GPU. A
// graph is captured per bucket, so the bucket count bounds the graphs a growing batch captures
// and the padding bounds the wasted work per step.
#include "engine/cuda_graphs.h"

#include <cstdint>
#include <set>

#include "gtest/gtest.h"

namespace jetserve {
namespace {

TEST(DecodeGraphCacheTest, BucketsArePowersOfTwoThenMultiplesOf64) {
  EXPECT_EQ(DecodeGraphCache::Bucket(1), 1);
  EXPECT_EQ(DecodeGraphCache::Bucket(2), 2);
  EXPECT_EQ(DecodeGraphCache::Bucket(3), 4);
  EXPECT_EQ(DecodeGraphCache::Bucket(5), 8);
  EXPECT_EQ(DecodeGraphCache::Bucket(33), 64);
  EXPECT_EQ(DecodeGraphCache::Bucket(64), 64);
  EXPECT_EQ(DecodeGraphCache::Bucket(65), 128);
  EXPECT_EQ(DecodeGraphCache::Bucket(773), 832);
  EXPECT_EQ(DecodeGraphCache::Bucket(DecodeGraphCache::kMaxBatch), DecodeGraphCache::kMaxBatch);
}

TEST(DecodeGraphCacheTest, EveryBatchFitsItsBucketWithLittlePadding) {
  std::set<int64_t> buckets;
  int64_t previous = 0;
  for (int64_t n = 1; n <= DecodeGraphCache::kMaxBatch; ++n) {
    const int64_t b = DecodeGraphCache::Bucket(n);
    ASSERT_GE(b, n);
    ASSERT_GE(b, previous) << n;             // a growing batch never goes back to a smaller graph
    ASSERT_LT(b - n, n > 64 ? 64 : n) << n;  // under 64 padding sequences, under 2x below 64
    ASSERT_EQ(DecodeGraphCache::Bucket(b), b) << n;  // a bucket is its own bucket
    buckets.insert(b);
    previous = b;
  }
  EXPECT_LE(buckets.size(), 70u);  // graphs a batch growing to kMaxBatch can capture
}

}  // namespace
}  // namespace jetserve
