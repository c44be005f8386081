// A warmed-up forward step allocates nothing on the heap: every workspace (activations, kernel
// scratch, per-layer sequence tables, thread-pool hand-off) is sized on the first steps and
// reused. Counts every operator new in the process, on every thread, while Forward runs.
#include <atomic>
#include <cstdlib>
#include <new>

#include "engine/model.h"
#include "gtest/gtest.h"
#include "tests/engine/tiny_model.h"

namespace {
std::atomic<bool> counting{false};
std::atomic<int64_t> allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  const std::size_t align = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace jetserve {
namespace {

TEST(ForwardAllocTest, WarmDecodeAndPrefillStepsDoNotAllocate) {
  auto model = Model::Load(testing::MakeTinyCheckpoint("forward_alloc_test"));
  ASSERT_TRUE(model.ok()) << model.status();
  MemoryOptions options;
  options.max_seqs = 3;
  options.page_size = 4;
  options.kv_blocks = 64;
  auto memory = HybridMemory::Create((*model)->config(), options);
  ASSERT_TRUE(memory.ok()) << memory.status();
  std::vector<SequenceMemory> seqs(3);
  for (SequenceMemory& s : seqs) (*memory)->Reserve(s, 60);
  std::vector<float> logits;

  // Prefill 12 tokens each, all three in one batch: sizes every workspace for 36 tokens.
  ForwardBatch prefill;
  for (int i = 0; i < 3; ++i) {
    for (int t = 0; t < 12; ++t) prefill.token_ids.push_back((i * 12 + t) % 97);
    prefill.seqs.push_back({&seqs[i], 0, 12, false});
  }
  ASSERT_TRUE((*model)->Forward(prefill, **memory, &logits).ok());

  ForwardBatch decode;
  decode.token_ids = {5, 6, 7};
  for (int i = 0; i < 3; ++i) decode.seqs.push_back({&seqs[i], 12, 1, false});
  for (int64_t pos = 12; pos < 40; ++pos) {
    for (int i = 0; i < 3; ++i) decode.seqs[i].start_position = pos;
    if (pos >= 14) {  // two warm-up steps
      allocations = 0;
      counting = true;
    }
    const absl::Status s = (*model)->Forward(decode, **memory, &logits);
    counting = false;
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(allocations.load(), 0) << "decode step at position " << pos;
  }

  // A prefill chunk no larger than the first one, on the warmed-up model.
  ForwardBatch chunk;
  for (int t = 0; t < 9; ++t) chunk.token_ids.push_back(t);
  chunk.seqs.push_back({&seqs[0], 40, 9, false});
  allocations = 0;
  counting = true;
  const absl::Status s = (*model)->Forward(chunk, **memory, &logits);
  counting = false;
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(allocations.load(), 0) << "prefill chunk";
}

}  // namespace
}  // namespace jetserve
