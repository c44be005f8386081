// The serving engine: continuous batching gives the same tokens as running alone (with chunked
// prefill, mixed steps and preemption), cancellation, deadlines, backpressure, shutdown, stop
// strings, validation, and that every pool is empty again afterwards.
#include "engine/engine.h"

#include <condition_variable>
#include <mutex>
#include <random>

#include "engine/generation.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/engine/tiny_model.h"

namespace jetserve {
namespace {

// The tiny model of tiny_model.h with the byte-level tokenizer's vocabulary, so text works.
constexpr char kConfig[] = R"json({
  "model_type": "jet_nemotron",
  "hidden_size": 36, "intermediate_size": 52, "num_hidden_layers": 4,
  "num_attention_heads": 3, "num_key_value_heads": 1,
  "layer_types": ["jet", "attn", "swa", "jet"],
  "efficient_attention_config": {
    "jet": {"num_heads": 3, "head_dim": 6, "expand_v": 1.5, "conv_size": 4,
            "dconv_generator_reduction": 3, "norm_eps": "1e-5"},
    "swa": {"window_size": 5}},
  "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": null,
  "vocab_size": 259, "max_position_embeddings": 256, "tie_word_embeddings": false,
  "bos_token_id": 256, "eos_token_id": 256
})json";

// Collects one request's outputs; lets the test thread wait for them.
class Collector {
 public:
  OutputSink Sink() {
    return [this](RequestOutput out) {
      std::lock_guard<std::mutex> lock(mu_);
      outputs_.push_back(std::move(out));
      cv_.notify_all();
    };
  }
  // Waits for the final output (the engine guarantees one).
  RequestOutput WaitFinished() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !outputs_.empty() && outputs_.back().finished; });
    return outputs_.back();
  }
  void WaitForTokens(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return Tokens().size() >= n || (!outputs_.empty() && outputs_.back().finished);
    });
  }
  std::vector<int32_t> Tokens() const {
    std::vector<int32_t> ids;
    for (const auto& o : outputs_) ids.insert(ids.end(), o.token_ids.begin(), o.token_ids.end());
    return ids;
  }
  std::string Text() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string t;
    for (const auto& o : outputs_) t += o.text;
    return t;
  }
  int finished_count() {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const auto& o : outputs_) n += o.finished;
    return n;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<RequestOutput> outputs_;
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string tok = testing::ScratchDir("engine_test_tokenizer");
    ASSERT_TRUE(WriteByteLevelTokenizer(tok).ok());
    RandomCheckpointOptions options;
    options.config_json = kConfig;
    options.out_dir = testing::ScratchDir("engine_test_model");
    options.seed = 11;
    options.tokenizer_dir = tok;
    ASSERT_TRUE(WriteRandomCheckpoint(options).ok());
    dir_ = new std::string(options.out_dir);
  }
  static void TearDownTestSuite() { delete dir_; }

  std::unique_ptr<Engine> MakeEngine(EngineOptions options) {
    auto model = Model::Load(*dir_);
    EXPECT_TRUE(model.ok()) << model.status();
    auto tokenizer = Tokenizer::LoadFromDir(*dir_);
    EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
    auto engine = Engine::Create(std::move(*model), std::move(*tokenizer), options, nullptr);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(*engine);
  }

  // Greedy (or seeded) tokens for one prompt with the plain single-sequence loop.
  std::vector<int32_t> Alone(const std::vector<int32_t>& prompt, int max_tokens,
                             SamplingParams sampling = {}) {
    auto model = *Model::Load(*dir_);
    auto memory = *MemoryForContext(model->config(), 1, prompt.size() + max_tokens);
    GenerationOptions options;
    options.max_tokens = max_tokens;
    options.sampling = sampling;
    options.prefill_chunk = 7;
    options.stop_token_ids = DefaultStopTokenIds(*model);
    std::vector<int32_t> out;
    EXPECT_TRUE(GenerateOne(*model, *memory, prompt, options, [&](const SampledToken& t) {
                  out.push_back(t.id);
                }).ok());
    return out;
  }

  static void ExpectPoolsEmpty(const Engine& engine) {
    const EngineStats stats = engine.Stats();
    EXPECT_EQ(stats.num_running, 0);
    EXPECT_EQ(stats.num_waiting, 0);
    for (const PoolStats& p : stats.pools) EXPECT_EQ(p.used, 0) << p.name;
  }

  static std::string* dir_;
};

std::string* EngineTest::dir_ = nullptr;

std::vector<int32_t> Prompt(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % 256);
  return ids;
}

EngineRequest Request(std::vector<int32_t> prompt, int max_tokens) {
  EngineRequest r;
  r.prompt_ids = std::move(prompt);
  r.max_tokens = max_tokens;
  return r;
}

void RunConcurrently(Engine& engine, const std::vector<EngineRequest>& requests,
                     std::vector<Collector>& collectors) {
  for (size_t i = 0; i < requests.size(); ++i) {
    auto id = engine.Submit(requests[i], collectors[i].Sink());
    ASSERT_TRUE(id.ok()) << id.status();
  }
  for (auto& c : collectors) {
    const RequestOutput last = c.WaitFinished();
    EXPECT_TRUE(last.status.ok()) << last.status;
  }
}

TEST_F(EngineTest, ContinuousBatchingGivesTheSameTokensAsAlone) {
  EngineOptions options;
  options.max_seqs = 6;
  options.max_batch_tokens = 16;  // forces chunked prefill mixed with decodes
  options.memory_bytes = 16 << 20;
  auto engine = MakeEngine(options);
  std::vector<EngineRequest> requests;
  for (int i = 0; i < 12; ++i) requests.push_back(Request(Prompt(3 + 5 * i, 100 + i), 6 + i % 5));
  std::vector<Collector> collectors(requests.size());
  RunConcurrently(*engine, requests, collectors);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(collectors[i].Tokens(), Alone(requests[i].prompt_ids, requests[i].max_tokens))
        << "request " << i;
  }
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, PreemptionRecomputesAndKeepsResults) {
  EngineOptions options;
  options.max_seqs = 4;
  options.max_batch_tokens = 64;
  options.page_size = 4;
  // Slots and rings for 4 sequences plus only a few KV pages: long generations must preempt.
  auto config = ModelConfig::FromJson(kConfig, "config");
  ASSERT_TRUE(config.ok()) << config.status();
  MemoryOptions mem;
  mem.max_seqs = 4;
  mem.page_size = 4;
  mem.kv_blocks = 1;
  auto one_block = HybridMemory::Create(*config, mem);
  ASSERT_TRUE(one_block.ok()) << one_block.status();
  const int64_t block = (*one_block)->paged_kv()->bytes_per_unit();
  const int64_t fixed = (*one_block)->total_bytes() - block;
  options.memory_bytes = fixed + 20 * block;  // 20 pages of 4 = 80 positions for 4 sequences
  auto engine = MakeEngine(options);
  std::vector<EngineRequest> requests;
  for (int i = 0; i < 4; ++i) requests.push_back(Request(Prompt(10 + i, 200 + i), 30));
  requests[3].sampling.temperature = 1.0f;  // a seeded sample survives recomputation
  requests[3].sampling.seed = 99;
  std::vector<Collector> collectors(requests.size());
  RunConcurrently(*engine, requests, collectors);
  EXPECT_GT(engine->Stats().preemptions, 0);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(collectors[i].Tokens(),
              Alone(requests[i].prompt_ids, requests[i].max_tokens, requests[i].sampling))
        << "request " << i;
  }
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, CancelStopsWithinAStepAndFreesEverything) {
  auto engine = MakeEngine({});
  Collector c;
  auto id = engine->Submit(Request(Prompt(20, 1), 200), c.Sink());
  ASSERT_TRUE(id.ok());
  c.WaitForTokens(2);
  engine->Cancel(*id);
  const RequestOutput last = c.WaitFinished();
  EXPECT_EQ(last.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(last.status.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(c.Tokens().size(), 200u);
  EXPECT_EQ(c.finished_count(), 1);
  ExpectPoolsEmpty(*engine);
  engine->Cancel(*id);  // finished ids are ignored
  engine->Cancel("no-such-request");
}

TEST_F(EngineTest, DeadlineEndsTheRequest) {
  auto engine = MakeEngine({});
  Collector c;
  EngineRequest r = Request(Prompt(5, 2), 200);
  r.deadline = std::chrono::steady_clock::now();  // already passed
  ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
  const RequestOutput last = c.WaitFinished();
  EXPECT_EQ(last.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(last.finish_reason, FinishReason::kCancelled);
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, FullQueueIsResourceExhausted) {
  EngineOptions options;
  options.max_seqs = 1;
  options.max_queue = 1;
  auto engine = MakeEngine(options);
  Collector a, b, c;
  auto ida = engine->Submit(Request(Prompt(5, 3), 240), a.Sink());
  ASSERT_TRUE(ida.ok());
  a.WaitForTokens(1);  // A runs and holds the only sequence slot
  ASSERT_TRUE(engine->Submit(Request(Prompt(5, 4), 3), b.Sink()).ok());  // B queues
  auto idc = engine->Submit(Request(Prompt(5, 5), 3), c.Sink());
  ASSERT_FALSE(idc.ok());
  EXPECT_EQ(idc.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(idc.status().message().find("max_queue 1"), std::string::npos);
  engine->Cancel(*ida);
  b.WaitFinished();
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, ShutdownCancelsInFlightWorkAndRefusesNewWork) {
  auto engine = MakeEngine({});
  Collector a, b;
  ASSERT_TRUE(engine->Submit(Request(Prompt(5, 6), 240), a.Sink()).ok());
  ASSERT_TRUE(engine->Submit(Request(Prompt(9, 7), 240), b.Sink()).ok());
  a.WaitForTokens(1);
  engine->Shutdown(std::chrono::milliseconds(0));
  EXPECT_EQ(a.WaitFinished().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b.WaitFinished().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(engine->accepting());
  Collector c;
  EXPECT_EQ(engine->Submit(Request(Prompt(5, 8), 3), c.Sink()).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, ShutdownWithGraceLetsWorkFinish) {
  auto engine = MakeEngine({});
  Collector a;
  ASSERT_TRUE(engine->Submit(Request(Prompt(5, 9), 8), a.Sink()).ok());
  engine->Shutdown(std::chrono::minutes(5));  // returns as soon as A is done
  const RequestOutput last = a.WaitFinished();
  EXPECT_TRUE(last.status.ok()) << last.status;
  EXPECT_EQ(last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(a.Tokens().size(), 8u);
}

TEST_F(EngineTest, StopAcceptingRefusesNewWorkAndKeepsInFlightWork) {
  auto engine = MakeEngine({});
  Collector a, b;
  ASSERT_TRUE(engine->Submit(Request(Prompt(5, 14), 8), a.Sink()).ok());
  engine->StopAccepting();
  EXPECT_FALSE(engine->accepting());
  EXPECT_EQ(engine->Submit(Request(Prompt(5, 15), 3), b.Sink()).status().code(),
            absl::StatusCode::kUnavailable);
  const RequestOutput last = a.WaitFinished();
  EXPECT_TRUE(last.status.ok()) << last.status;
  EXPECT_EQ(a.Tokens().size(), 8u);
}

TEST_F(EngineTest, SlotReuseDoesNotLeakState) {
  EngineOptions options;
  options.max_seqs = 1;  // every request uses the same slot and ring
  options.max_batch_tokens = 8;
  const std::vector<int32_t> b_prompt = Prompt(13, 10);
  const std::vector<int32_t> fresh = Alone(b_prompt, 12);
  auto engine = MakeEngine(options);
  {
    Collector a;  // A runs to completion, leaving its state in the slot
    ASSERT_TRUE(engine->Submit(Request(Prompt(40, 11), 10), a.Sink()).ok());
    a.WaitFinished();
  }
  {
    Collector a;  // A cancelled part-way
    auto id = engine->Submit(Request(Prompt(60, 12), 50), a.Sink());
    ASSERT_TRUE(id.ok());
    a.WaitForTokens(1);
    engine->Cancel(*id);
    a.WaitFinished();
  }
  Collector b;
  ASSERT_TRUE(engine->Submit(Request(b_prompt, 12), b.Sink()).ok());
  b.WaitFinished();
  EXPECT_EQ(b.Tokens(), fresh);
}

TEST_F(EngineTest, StopStringsAcrossTokensAreCaughtAndNotStreamed) {
  auto engine = MakeEngine({});
  // Byte-level tokens: any stop string of 2+ bytes spans tokens.
  EngineRequest r = Request(Prompt(6, 13), 40);
  r.ignore_eos = true;
  Collector full;
  ASSERT_TRUE(engine->Submit(r, full.Sink()).ok());
  full.WaitFinished();
  const std::vector<int32_t> ids = full.Tokens();
  ASSERT_EQ(ids.size(), 40u);
  // The stop string: the first printable 3-byte run of the text after its first 5 bytes.
  const std::string text = full.Text();
  std::string stop;
  for (size_t at = 5; at + 3 <= text.size() && stop.empty(); ++at) {
    const std::string candidate = text.substr(at, 3);
    if (std::all_of(candidate.begin(), candidate.end(),
                    [](char ch) { return ch >= 32 && ch < 127; })) {
      stop = candidate;
    }
  }
  if (stop.empty()) GTEST_SKIP() << "random model produced no printable 3-byte run";
  const std::string expected = text.substr(0, text.find(stop));
  for (bool include : {false, true}) {
    EngineRequest s = r;
    s.stop = {"\x01never", stop};
    s.include_stop_str_in_output = include;
    Collector c;
    ASSERT_TRUE(engine->Submit(s, c.Sink()).ok());
    const RequestOutput last = c.WaitFinished();
    EXPECT_EQ(last.finish_reason, FinishReason::kStop);
    EXPECT_EQ(last.stop_reason, stop);
    EXPECT_EQ(c.Text(), include ? expected + stop : expected);
  }
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, InvalidRequestsNameTheField) {
  auto engine = MakeEngine({});
  auto expect = [&](EngineRequest r, const std::string& field) {
    Collector c;
    auto id = engine->Submit(r, c.Sink());
    ASSERT_FALSE(id.ok()) << field;
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(id.status().message().find(field), std::string::npos) << id.status();
  };
  expect(Request({}, 5), "prompt");
  expect(Request({1, 259}, 5), "prompt");
  expect(Request({-1}, 5), "prompt");
  expect(Request(Prompt(256, 1), 5), "max_model_len");
  expect(Request({1}, 0), "max_tokens");
  EngineRequest r = Request({1}, 5);
  r.sampling.temperature = std::nanf("");
  expect(r, "temperature");
  r = Request({1}, 5);
  r.sampling.top_p = 0;
  expect(r, "top_p");
  r = Request({1}, 5);
  r.sampling.logprobs = 10000;
  expect(r, "logprobs");
  r = Request({1}, 5);
  r.stop = {""};
  expect(r, "stop");
  r = Request({}, 5);
  r.prompt_text = std::string("\xff\xfe bad utf-8");
  expect(r, "prompt");
  // A duplicate in-flight id is refused; text prompts work.
  Collector a, b;
  EngineRequest t;
  t.request_id = "dup";
  t.prompt_text = "hello";
  t.max_tokens = 200;
  ASSERT_TRUE(engine->Submit(t, a.Sink()).ok());
  EXPECT_EQ(engine->Submit(t, b.Sink()).status().code(), absl::StatusCode::kAlreadyExists);
  engine->Cancel("dup");
  EXPECT_EQ(a.WaitFinished().prompt_tokens, 5);
}

}  // namespace
}  // namespace jetserve
