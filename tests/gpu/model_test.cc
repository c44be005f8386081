// The whole model on the GPU against the CPU forward pass: a tiny checkpoint with every layer
// type (greedy tokens the CPU's for 32 decode steps up to near-tie flips, logits close), a
// 2B-shaped checkpoint cut to a few layers (logits close over chunked prefill and decode), and a
// forked sequence (state-slot, ring and KV copies). Skipped without a device.
#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "engine/cuda_backend.h"
#include "engine/cuda_graphs.h"
#include "engine/device.h"
#include "engine/memory/hybrid_memory.h"
#include "gpu_test_util.h"
#include "nlohmann/json.hpp"
#include "tests/engine/tiny_model.h"
#include "tests/test_paths.h"

namespace jetserve::gpu_test {
namespace {

// A model on one device with its own memory.
struct Side {
  std::unique_ptr<Model> model;
  std::unique_ptr<HybridMemory> memory;
  std::vector<SequenceMemory> seqs;
  std::vector<float> logits;
};

// Opens the model with memory for `max_seqs` sequences of `max_len` positions; with `reserve`,
// each sequence's memory is reserved for all of them up front (else the test reserves as it goes,
// as the engine does, so block tables grow step by step).
void Open(const std::string& dir, bool cuda, int64_t max_seqs, int64_t max_len, Side* side,
          bool reserve = true) {
  auto model = Model::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  side->model = *std::move(model);
  if (cuda) {
    const absl::Status s = UseDevice(*side->model, "cuda");
    ASSERT_TRUE(s.ok()) << s;
  }
  MemoryOptions o;
  o.max_seqs = max_seqs;
  o.page_size = 16;
  o.kv_blocks = max_seqs * ((max_len + 15) / 16);
  o.host_storage = side->model->needs_host_cache();
  o.kv_element_bytes = side->model->kv_element_bytes();  // as Engine::Create does
  auto memory = HybridMemory::Create(side->model->config(), o);
  ASSERT_TRUE(memory.ok()) << memory.status();
  side->memory = *std::move(memory);
  ASSERT_TRUE(side->model->AttachMemory(*side->memory).ok());
  side->seqs.resize(max_seqs);
  if (!reserve) return;
  for (SequenceMemory& s : side->seqs) side->memory->Reserve(s, max_len);
}

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// The GPU rounds activations to bf16 where the CPU keeps fp32 (its GEMMs split x into bf16
// hi + lo), so logits differ by rounding noise, not only by summation order, and a near-tie can
// flip the argmax. How much, measured with the PyTorch reference on the tiny checkpoint
// (tests/gpu/bf16_noise.py): rounding only the GEMM inputs to bf16 moves its logits by up to
// 0.067 x max|logit| and flips the argmax of a row whose top-2 margin is 0.12. Random tiny
// weights amplify the noise; the 2B-shaped model stays within 0.05.
struct Tolerance {
  float rel, abs;  // per row: |gpu - cpu| <= rel * max|cpu| + abs
  float Of(const float* cpu_row, int64_t vocab) const {
    float scale = 0;
    for (int64_t i = 0; i < vocab; ++i) scale = std::max(scale, std::fabs(cpu_row[i]));
    return rel * scale + abs;
  }
};
constexpr Tolerance kTinyTolerance{0.1f, 0.02f};
constexpr Tolerance k2BTolerance{0.05f, 0.02f};

void ExpectLogitsClose(const std::vector<float>& gpu, const std::vector<float>& cpu, int64_t vocab,
                       const Tolerance& tol, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  for (size_t r = 0; r * vocab < cpu.size(); ++r) {
    float worst = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      worst = std::max(worst, std::fabs(gpu[r * vocab + i] - cpu[r * vocab + i]));
    }
    EXPECT_LE(worst, tol.Of(&cpu[r * vocab], vocab)) << what << " row " << r;
  }
}

// The GPU's greedy token against the CPU's logits row: 0 when it is the CPU's argmax, 1 when it
// is a near-tie flip (the CPU scores it within the row's noise band of its best), and a test
// failure for anything else (a wrong token that bf16 rounding cannot explain).
int GreedyFlip(int32_t gpu_token, const float* cpu_row, int64_t vocab, const Tolerance& tol,
               const std::string& what) {
  const int32_t best = static_cast<int32_t>(std::max_element(cpu_row, cpu_row + vocab) - cpu_row);
  if (gpu_token == best) return 0;
  EXPECT_TRUE(gpu_token >= 0 && gpu_token < vocab) << what << ": token " << gpu_token;
  if (gpu_token < 0 || gpu_token >= vocab) return 1;
  EXPECT_LE(cpu_row[best] - cpu_row[gpu_token], 2 * tol.Of(cpu_row, vocab))
      << what << ": GPU chose " << gpu_token << ", CPU " << best << " (not a near-tie)";
  return 1;
}

// Prefills each prompt in chunks of `chunk` (all sequences in one batch per step), then decodes
// `steps` tokens greedily with the CPU's choice fed to both sides (so one near-tie cannot
// cascade), counting the rows whose GPU argmax is a near-tie flip (GreedyFlip).
int RunBoth(Side& cpu, Side& gpu, const std::vector<std::vector<int32_t>>& prompts, int64_t chunk,
            int steps, int64_t vocab, const Tolerance& tol) {
  const int64_t S = prompts.size();
  std::vector<int64_t> done(S, 0);
  std::vector<int32_t> next(S);
  for (bool more = true; more;) {
    more = false;
    ForwardBatch bc, bg;
    std::vector<int64_t> in_batch;
    for (int64_t i = 0; i < S; ++i) {
      const int64_t left = static_cast<int64_t>(prompts[i].size()) - done[i];
      if (left <= 0) continue;
      const int64_t n = std::min(chunk, left);
      for (int64_t t = 0; t < n; ++t) bc.token_ids.push_back(prompts[i][done[i] + t]);
      bc.seqs.push_back({&cpu.seqs[i], done[i], n, false});
      bg.seqs.push_back({&gpu.seqs[i], done[i], n, false});
      in_batch.push_back(i);
      done[i] += n;
      more = true;
    }
    if (!more) break;
    bg.token_ids = bc.token_ids;
    EXPECT_TRUE(cpu.model->Forward(bc, *cpu.memory, &cpu.logits).ok());
    const absl::Status s = gpu.model->Forward(bg, *gpu.memory, &gpu.logits);
    EXPECT_TRUE(s.ok()) << s;
    ExpectLogitsClose(gpu.logits, cpu.logits, vocab, tol, "prefill");
    for (size_t r = 0; r < in_batch.size(); ++r) {
      next[in_batch[r]] = Argmax(cpu.logits.data() + r * vocab, vocab);
    }
  }
  int mismatches = 0;
  for (int step = 0; step < steps; ++step) {
    ForwardBatch bc, bg;
    for (int64_t i = 0; i < S; ++i) {
      bc.token_ids.push_back(next[i]);
      bc.seqs.push_back({&cpu.seqs[i], done[i], 1, false});
      bg.seqs.push_back({&gpu.seqs[i], done[i], 1, false});
      ++done[i];
    }
    bg.token_ids = bc.token_ids;
    EXPECT_TRUE(cpu.model->Forward(bc, *cpu.memory, &cpu.logits).ok());
    const absl::Status s = gpu.model->Forward(bg, *gpu.memory, &gpu.logits);
    EXPECT_TRUE(s.ok()) << s;
    const std::string what = "decode step " + std::to_string(step);
    ExpectLogitsClose(gpu.logits, cpu.logits, vocab, tol, what);
    for (int64_t i = 0; i < S; ++i) {
      const float* cpu_row = cpu.logits.data() + i * vocab;
      mismatches += GreedyFlip(Argmax(gpu.logits.data() + i * vocab, vocab), cpu_row, vocab, tol,
                               what + " sequence " + std::to_string(i));
      next[i] = Argmax(cpu_row, vocab);
    }
  }
  return mismatches;
}

TEST(GpuModelTest, TinyGreedyTokensMatchFor32Steps) {
  SKIP_WITHOUT_CUDA();
  const std::string dir = testing::MakeTinyCheckpoint("gpu_model_tiny");
  Side cpu, gpu;
  Open(dir, false, 3, 128, &cpu);
  Open(dir, true, 3, 128, &gpu);
  const std::vector<std::vector<int32_t>> prompts = {
      {5, 17, 33, 2, 90, 41, 7}, {1}, {3, 9, 27, 81, 50, 60, 70, 80, 11, 12, 13, 14, 15}};
  // 96 greedy decisions; bf16 noise may flip a near-tie or two (the reference: 2 in 66 rows).
  EXPECT_LE(RunBoth(cpu, gpu, prompts, 5, 32, 97, kTinyTolerance), 4);
}

TEST(GpuModelTest, TinyForkCopiesStateRingAndKv) {
  SKIP_WITHOUT_CUDA();
  const std::string dir = testing::MakeTinyCheckpoint("gpu_model_fork");
  const std::vector<int32_t> prompt = {4,  8,  15, 16, 23, 42, 7,  9,  11, 30,
                                       31, 32, 33, 34, 35, 36, 37, 38, 39, 40};
  Side two;  // two sequences: the second is released and forked from the first
  Open(dir, true, 2, 64, &two);
  ForwardBatch b{prompt, {{&two.seqs[0], 0, static_cast<int64_t>(prompt.size()), false}}};
  ASSERT_TRUE(two.model->Forward(b, *two.memory, &two.logits).ok());
  two.memory->Release(two.seqs[1]);
  two.memory->Fork(two.seqs[0], two.seqs[1], prompt.size());
  ForwardBatch step{{5, 5},
                    {{&two.seqs[0], static_cast<int64_t>(prompt.size()), 1, false},
                     {&two.seqs[1], static_cast<int64_t>(prompt.size()), 1, false}}};
  ASSERT_TRUE(two.model->Forward(step, *two.memory, &two.logits).ok());
  const int64_t V = 97;
  for (int64_t i = 0; i < V; ++i) {
    ASSERT_EQ(two.logits[i], two.logits[V + i]) << "forked sequence differs at logit " << i;
  }
}

// Block tables that grow as the engine grows them (pages reserved step by step, so decode steps
// cross 16-token pages), and a state slot, window ring and pages released and handed to a new,
// longer sequence: the GPU keeps the CPU's logits throughout. With JETSERVE_CUDA_TABLES=
// incremental this is what appends to the device's table rows and resets a reused one.
TEST(GpuModelTest, TinyGrowingTablesAndReusedSlots) {
  SKIP_WITHOUT_CUDA();
  const std::string dir = testing::MakeTinyCheckpoint("gpu_model_grow");
  const int64_t V = 97;
  Side cpu, gpu;
  Open(dir, false, 2, 160, &cpu, /*reserve=*/false);
  Open(dir, true, 2, 160, &gpu, /*reserve=*/false);
  std::vector<int64_t> done(2, 0);
  // One step: for each (sequence, tokens), reserve up to its new end on both sides, run, compare;
  // returns the CPU's greedy token per sequence.
  auto step = [&](const std::vector<std::pair<int, std::vector<int32_t>>>& parts,
                  const std::string& what) {
    ForwardBatch bc, bg;
    for (const auto& [i, tokens] : parts) {
      const int64_t n = static_cast<int64_t>(tokens.size());
      cpu.memory->Reserve(cpu.seqs[i], done[i] + n);
      gpu.memory->Reserve(gpu.seqs[i], done[i] + n);
      bc.token_ids.insert(bc.token_ids.end(), tokens.begin(), tokens.end());
      bc.seqs.push_back({&cpu.seqs[i], done[i], n, false});
      bg.seqs.push_back({&gpu.seqs[i], done[i], n, false});
      done[i] += n;
    }
    bg.token_ids = bc.token_ids;
    EXPECT_TRUE(cpu.model->Forward(bc, *cpu.memory, &cpu.logits).ok());
    const absl::Status s = gpu.model->Forward(bg, *gpu.memory, &gpu.logits);
    EXPECT_TRUE(s.ok()) << what << ": " << s;
    ExpectLogitsClose(gpu.logits, cpu.logits, V, kTinyTolerance, what);
    std::vector<int32_t> next;
    for (size_t r = 0; r < parts.size(); ++r) next.push_back(Argmax(&cpu.logits[r * V], V));
    return next;
  };
  auto prompt = [&](int n, int salt) {
    std::vector<int32_t> p;
    for (int t = 0; t < n; ++t) p.push_back(static_cast<int32_t>((salt * 7 + t * 13) % V));
    return p;
  };
  std::vector<int32_t> next = step({{0, prompt(5, 1)}, {1, prompt(37, 2)}}, "prefill");
  for (int s = 0; s < 20; ++s) {  // sequence 0 to 25 positions, 1 to 57: both cross pages
    next = step({{0, {next[0]}}, {1, {next[1]}}}, "decode " + std::to_string(s));
  }
  const int32_t slot_before = gpu.seqs[1].state_slot;
  cpu.memory->Release(cpu.seqs[1]);
  gpu.memory->Release(gpu.seqs[1]);
  done[1] = 0;
  // A new sequence in the released slot (the only free one), with more pages than the last.
  const std::vector<int32_t> long_prompt = prompt(70, 3);
  std::vector<int32_t> first(long_prompt.begin(), long_prompt.begin() + 32);
  std::vector<int32_t> rest(long_prompt.begin() + 32, long_prompt.end());
  next = step({{0, {next[0]}}, {1, first}}, "new sequence, chunk 1");
  EXPECT_EQ(gpu.seqs[1].state_slot, slot_before) << "the slot was not reused";
  next = step({{0, {next[0]}}, {1, rest}}, "new sequence, chunk 2");
  for (int s = 0; s < 10; ++s) {
    next = step({{0, {next[0]}}, {1, {next[1]}}}, "decode after reuse " + std::to_string(s));
  }
}

// Greedy decode through ForwardGreedy (device sampling; decode steps replayed from CUDA graphs,
// 5 sequences padded to the bucket of 8) gives the CPU's greedy tokens, up to near-tie flips.
TEST(GpuModelTest, GraphDecodeMatchesCpuGreedy) {
  SKIP_WITHOUT_CUDA();
  const std::string dir = testing::MakeTinyCheckpoint("gpu_model_graphs");
  Side cpu, gpu;
  Open(dir, false, 5, 128, &cpu);
  Open(dir, true, 5, 128, &gpu);
  auto* backend = dynamic_cast<CudaBackend*>(gpu.model->backend());
  ASSERT_NE(backend, nullptr);
  const int64_t S = 5, V = 97;
  std::vector<int32_t> cpu_next(S), gpu_next(S);
  // Prefill 9 tokens each (one batch, all logits rows = last tokens).
  ForwardBatch bc, bg;
  for (int64_t i = 0; i < S; ++i) {
    for (int t = 0; t < 9; ++t) bc.token_ids.push_back(static_cast<int32_t>((i * 13 + t * 7) % V));
    bc.seqs.push_back({&cpu.seqs[i], 0, 9, false});
    bg.seqs.push_back({&gpu.seqs[i], 0, 9, false});
  }
  bg.token_ids = bc.token_ids;
  ASSERT_TRUE(cpu.model->Forward(bc, *cpu.memory, &cpu.logits).ok());
  const absl::Status s = backend->ForwardGreedy(bg, *gpu.memory, &gpu_next);
  ASSERT_TRUE(s.ok()) << s;
  int flips = 0;
  for (int64_t i = 0; i < S; ++i) {
    cpu_next[i] = Argmax(cpu.logits.data() + i * V, V);
    flips += GreedyFlip(gpu_next[i], cpu.logits.data() + i * V, V, kTinyTolerance, "prefill");
  }
  for (int step = 0; step < 12; ++step) {  // warm-up, capture, then replays
    ForwardBatch dc, dg;
    for (int64_t i = 0; i < S; ++i) {
      dc.seqs.push_back({&cpu.seqs[i], 9 + step, 1, false});
      dg.seqs.push_back({&gpu.seqs[i], 9 + step, 1, false});
    }
    dc.token_ids = cpu_next;
    dg.token_ids = cpu_next;  // teacher-forced: both continue from the CPU's tokens
    ASSERT_TRUE(cpu.model->Forward(dc, *cpu.memory, &cpu.logits).ok());
    const absl::Status st = backend->ForwardGreedy(dg, *gpu.memory, &gpu_next);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(gpu_next.size(), static_cast<size_t>(S));
    for (int64_t i = 0; i < S; ++i) {
      cpu_next[i] = Argmax(cpu.logits.data() + i * V, V);
      flips += GreedyFlip(gpu_next[i], cpu.logits.data() + i * V, V, kTinyTolerance,
                          "decode step " + std::to_string(step));
    }
  }
  EXPECT_LE(flips, 65 / 8) << "near-tie flips in 65 greedy decisions";
}

// The 2B config with its layers cut to one of each kind (+ a second jet): full hidden sizes,
// Dk 96 / Dv 256, the real vocabulary.
std::string Make2BShapedCheckpoint() {
  std::ifstream in(testing::SharedModelDir() + "/config-2B.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["num_hidden_layers"] = 4;
  config["layer_types"] = {"jet", "attn", "swa", "jet"};
  config["max_position_embeddings"] = 4096;
  config["efficient_attention_config"]["swa"]["window_size"] = 64;
  const std::string text = config.dump();
  return testing::MakeTinyCheckpoint("gpu_model_2b_shaped", text.c_str(), 11);
}

TEST(GpuModelTest, TwoBShapedLogitsClose) {
  SKIP_WITHOUT_CUDA();
  if (!testing::SharedModelAvailable())
    GTEST_SKIP() << "no shared model configs at " << testing::SharedModelDir();
  const std::string dir = Make2BShapedCheckpoint();
  Side cpu, gpu;
  Open(dir, false, 2, 512, &cpu);
  Open(dir, true, 2, 512, &gpu);
  std::vector<int32_t> a(150), b(77);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int32_t>((i * 7919) % 151000);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<int32_t>((i * 104729) % 151000);
  const int mismatches = RunBoth(cpu, gpu, {a, b}, 64, 6, 151936, k2BTolerance);
  EXPECT_LE(mismatches, 1) << "greedy tokens of random 2B-shaped weights";
}

// The graph cache keeps at most max_graphs, dropping the least recently launched; an evicted
// key is recaptured (no second warm-up) and its replays still do the captured work.
TEST(GpuGraphCacheTest, EvictsLeastRecentlyLaunched) {
  SKIP_WITHOUT_CUDA();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  DeviceBuffer<int32_t> cell(1);
  DecodeGraphCache cache(/*max_graphs=*/2);
  int enqueued = 0;
  // Runs `key`'s step (write its bucket into the cell) and returns what the cell holds.
  auto run = [&](int64_t bucket) {
    const DecodeGraphCache::Key key{bucket, 1, 1, false};
    const absl::Status s = cache.Run(key, stream, [&]() -> absl::Status {
      ++enqueued;
      // A byte pattern per bucket: memset nodes are capturable.
      if (cudaMemsetAsync(cell.get(), static_cast<int>(bucket), sizeof(int32_t), stream) !=
          cudaSuccess) {
        return absl::InternalError("memset");
      }
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    return static_cast<int64_t>(cell.Download()[0] & 0xff);
  };
  EXPECT_EQ(run(1), 1);  // warm-up, uncaptured
  EXPECT_EQ(run(1), 1);  // captured
  EXPECT_EQ(run(2), 2);
  EXPECT_EQ(run(2), 2);
  EXPECT_EQ(enqueued, 4);
  EXPECT_EQ(cache.size(), 2);
  EXPECT_EQ(run(1), 1);  // replay: bucket 1 is now the most recent
  EXPECT_EQ(enqueued, 4);
  EXPECT_EQ(run(4), 4);  // warm-up: no graph yet, nothing evicted
  EXPECT_EQ(cache.size(), 2);
  EXPECT_EQ(run(4), 4);  // captured: evicts bucket 2, the least recently launched
  EXPECT_EQ(cache.size(), 2);
  EXPECT_TRUE(cache.Has({1, 1, 1, false}));
  EXPECT_FALSE(cache.Has({2, 1, 1, false}));
  EXPECT_TRUE(cache.Has({4, 1, 1, false}));
  EXPECT_EQ(run(2), 2);  // recaptured at once (warmed before), evicting bucket 1
  EXPECT_EQ(enqueued, 7);
  EXPECT_FALSE(cache.Has({1, 1, 1, false}));
  EXPECT_EQ(run(4), 4);  // replays
  EXPECT_EQ(run(2), 2);
  EXPECT_EQ(enqueued, 7);
  cache.Invalidate();  // every graph destroyed; the next use recaptures
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(run(4), 4);
  EXPECT_EQ(enqueued, 8);
  cache.Clear();
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace jetserve::gpu_test
