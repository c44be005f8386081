// The serving engine: continuous batching gives the same tokens as running alone (with chunked
// prefill, mixed steps and preemption), cancellation, deadlines, backpressure, shutdown, stop
// strings, validation, and that every pool is empty again afterwards.
#include "engine/engine.h"

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "engine/device.h"
#include "engine/generation.h"
#include "engine/metrics.h"
#include "engine/null_backend.h"
#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
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
    cv_.wait(lock, [&] { return !outputs_.empty() && outputs_.back().request_finished; });
    return outputs_.back();
  }
  void WaitForTokens(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return Tokens().size() >= n || (!outputs_.empty() && outputs_.back().request_finished);
    });
  }
  // One choice's tokens (the only one's, for n = 1).
  std::vector<int32_t> Tokens(int32_t index = 0) const {
    std::vector<int32_t> ids;
    for (const auto& o : outputs_) {
      if (o.index == index) ids.insert(ids.end(), o.token_ids.begin(), o.token_ids.end());
    }
    return ids;
  }
  std::string Text(int32_t index = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string t;
    for (const auto& o : outputs_) {
      if (o.index == index) t += o.text;
    }
    return t;
  }
  std::vector<RequestOutput> Outputs() {
    std::lock_guard<std::mutex> lock(mu_);
    return outputs_;
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

// A backend that "samples on its device" by running the CPU model and the CPU sampler: the
// engine's device-sampling path (ForwardKeepLogits, forks, then SampleLast for every choice and
// Deliver) must give the tokens of the CPU path for deterministic (greedy) requests, with
// penalties, bans (min_tokens) and n > 1 choices sharing their prompt's logits row.
class HostSamplingBackend : public ForwardBackend {
 public:
  explicit HostSamplingBackend(std::unique_ptr<Model> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "host-sampling-test"; }
  bool keeps_cache_on_host() const override { return true; }
  absl::Status AttachMemory(HybridMemory&) override { return absl::OkStatus(); }
  absl::Status Forward(const ForwardBatch& batch, HybridMemory& memory,
                       std::vector<float>* logits) override {
    ++forwards_;
    return inner_->Forward(batch, memory, logits);
  }
  bool CanSample(const SamplingParams&) const override { return true; }
  absl::Status ForwardKeepLogits(const ForwardBatch& batch, HybridMemory& memory) override {
    ++kept_;
    return inner_->Forward(batch, memory, &logits_);
  }
  absl::Status SampleLast(const std::vector<SampleSpec>& specs,
                          std::vector<SampledToken>* tokens) override {
    const int32_t vocab = inner_->config().vocab_size;
    tokens->clear();
    for (const SampleSpec& s : specs) {
      EXPECT_LT(static_cast<size_t>(s.row) * vocab, logits_.size());
      Rng rng(s.seed ^ (s.step * 0x9E3779B97F4A7C15ull));
      tokens->push_back(
          sampler_.Sample(logits_.data() + s.row * vocab, vocab, *s.params, s.context, rng));
    }
    return absl::OkStatus();
  }
  int forwards_ = 0, kept_ = 0;

 private:
  std::unique_ptr<Model> inner_;
  std::vector<float> logits_;
  Sampler sampler_;
};

// A backend that keeps the caches on its device in bf16. Sizing only: it never runs a step.
class Bf16CacheBackend : public ForwardBackend {
 public:
  std::string name() const override { return "bf16-cache-test"; }
  int64_t kv_element_bytes() const override { return 2; }
  absl::Status AttachMemory(HybridMemory&) override { return absl::OkStatus(); }
  absl::Status Forward(const ForwardBatch&, HybridMemory&, std::vector<float>*) override {
    return absl::UnimplementedError("sizing only");
  }
};

// The engine sizes the pools at the backend's element size: the same memory budget holds at
// least twice the KV blocks in bf16 on a device as in fp32 on the host.
TEST_F(EngineTest, PoolsAreSizedAtTheBackendsCacheElementSize) {
  EngineOptions options;
  options.max_seqs = 4;
  options.memory_bytes = 4 << 20;
  auto kv_blocks = [&](bool bf16) -> int64_t {
    auto model = Model::Load(*dir_);
    EXPECT_TRUE(model.ok()) << model.status();
    if (bf16) (*model)->set_backend(std::make_unique<Bf16CacheBackend>());
    auto tokenizer = Tokenizer::LoadFromDir(*dir_);
    EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
    auto engine = Engine::Create(std::move(*model), std::move(*tokenizer), options, nullptr);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return -1;
    for (const PoolStats& p : (*engine)->Stats().pools) {
      if (p.name == "kv_blocks") return p.total;
    }
    return -1;
  };
  const int64_t fp32 = kv_blocks(false);
  const int64_t bf16 = kv_blocks(true);
  ASSERT_GT(fp32, 0);
  EXPECT_GE(bf16, 2 * fp32);
}

TEST_F(EngineTest, DeviceSamplingPathGivesTheCpuPathsTokens) {
  EngineOptions options;
  options.max_seqs = 6;
  options.max_batch_tokens = 16;  // chunked prefill mixed with decodes
  options.memory_bytes = 16 << 20;
  std::vector<EngineRequest> requests;
  for (int i = 0; i < 10; ++i) {
    EngineRequest r = Request(Prompt(3 + 4 * i, 300 + i), 5 + i % 4);
    if (i % 3 == 1) {
      r.sampling.repetition_penalty = 1.3f;
      r.sampling.presence_penalty = 0.5f;
      r.sampling.frequency_penalty = 0.25f;
    }
    if (i % 4 == 2) r.min_tokens = 3;  // bans end-of-sequence for the first tokens
    if (i == 5) r.n = 3;               // choices share the prompt's logits row
    if (i == 7) {
      r.sampling.return_logprobs = true;
      r.sampling.top_logprobs = 2;
    }
    requests.push_back(r);
  }
  auto run = [&](bool device) {
    auto model = Model::Load(*dir_);
    EXPECT_TRUE(model.ok());
    HostSamplingBackend* backend = nullptr;
    if (device) {
      auto inner = Model::Load(*dir_);
      EXPECT_TRUE(inner.ok());
      auto b = std::make_unique<HostSamplingBackend>(std::move(*inner));
      backend = b.get();
      (*model)->set_backend(std::move(b));
    }
    auto tokenizer = Tokenizer::LoadFromDir(*dir_);
    auto engine = Engine::Create(std::move(*model), std::move(*tokenizer), options, nullptr);
    EXPECT_TRUE(engine.ok()) << engine.status();
    std::vector<Collector> collectors(requests.size());
    RunConcurrently(**engine, requests, collectors);
    std::vector<std::vector<int32_t>> tokens;
    for (size_t i = 0; i < requests.size(); ++i) {
      for (int32_t c = 0; c < requests[i].n; ++c) tokens.push_back(collectors[i].Tokens(c));
    }
    if (device) {
      EXPECT_GT(backend->kept_, 0) << "the engine never took the device-sampling path";
      EXPECT_EQ(backend->forwards_, 0) << "no request needed the logits on the host";
    }
    ExpectPoolsEmpty(**engine);
    return tokens;
  };
  const auto cpu = run(false);
  const auto device = run(true);
  ASSERT_EQ(cpu.size(), device.size());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_EQ(device[i], cpu[i]) << "sequence " << i;
}

// --device null: no computation, each choice's tokens drawn from (its seed, its step), never an
// end-of-sequence id, so every request runs to max_tokens through the engine's whole path:
// chunked prefill, n > 1 forks, device sampling, logprobs, memory released.
TEST_F(EngineTest, NullDeviceRunsEveryRequestToItsLength) {
  EngineOptions options;
  options.max_seqs = 5;
  options.max_batch_tokens = 24;  // chunked prefill mixed with decodes; requests queue
  std::vector<EngineRequest> requests;
  for (int i = 0; i < 10; ++i) {
    EngineRequest r = Request(Prompt(3 + 7 * i, 500 + i), 3 + 2 * i);
    r.sampling.seed = 1000 + i;
    if (i == 4) r.n = 3;
    if (i == 6) {
      r.sampling.return_logprobs = true;
      r.sampling.top_logprobs = 2;
    }
    requests.push_back(r);
  }
  auto model = Model::Load(*dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(UseDevice(**model, "null").ok());
  const ModelConfig config = (*model)->config();
  const NullBackend reference(config);
  auto tokenizer = Tokenizer::LoadFromDir(*dir_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto engine = Engine::Create(std::move(*model), std::move(*tokenizer), options, nullptr);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<Collector> collectors(requests.size());
  RunConcurrently(**engine, requests, collectors);
  for (size_t i = 0; i < requests.size(); ++i) {
    const EngineRequest& r = requests[i];
    const std::vector<RequestOutput> outputs = collectors[i].Outputs();
    std::set<std::vector<int32_t>> distinct;
    for (int32_t c = 0; c < r.n; ++c) {
      const std::vector<int32_t> tokens = collectors[i].Tokens(c);
      ASSERT_EQ(tokens.size(), static_cast<size_t>(r.max_tokens)) << "request " << i << "." << c;
      for (int32_t id : tokens) EXPECT_NE(id, config.eos_token_ids[0]) << "request " << i;
      distinct.insert(tokens);
      if (c == 0) {
        for (int32_t k = 0; k < r.max_tokens; ++k) {
          EXPECT_EQ(tokens[k], reference.TokenFor(r.sampling.seed, k)) << "request " << i;
        }
      }
    }
    EXPECT_EQ(distinct.size(), static_cast<size_t>(r.n)) << "choices of request " << i;
    for (const RequestOutput& o : outputs) {
      if (o.finished) {
        EXPECT_EQ(o.finish_reason, FinishReason::kLength) << "request " << i;
      }
      if (!r.sampling.return_logprobs) continue;
      ASSERT_EQ(o.logprobs.size(), o.token_ids.size());
      for (size_t k = 0; k < o.logprobs.size(); ++k) {
        EXPECT_FLOAT_EQ(o.logprobs[k].logprob, -std::log(259.0f));
        ASSERT_EQ(o.logprobs[k].top.size(), 2u);
        EXPECT_EQ(o.logprobs[k].top[0].first, o.token_ids[k]);  // all equally likely
      }
    }
  }
  ExpectPoolsEmpty(**engine);
}

TEST(NullBackendTest, DrawsEveryIdButEndOfSequence) {
  auto config = ModelConfig::FromJson(kConfig, "config");
  ASSERT_TRUE(config.ok()) << config.status();
  const NullBackend backend(*config);
  std::vector<int> seen(config->vocab_size, 0);
  for (uint64_t seed = 0; seed < 40; ++seed) {
    for (uint64_t step = 0; step < 500; ++step) {
      const int32_t id = backend.TokenFor(seed, step);
      ASSERT_GE(id, 0);
      ASSERT_LT(id, config->vocab_size);
      ++seen[id];
      EXPECT_EQ(id, backend.TokenFor(seed, step));  // a function of (seed, step) alone
    }
  }
  EXPECT_EQ(seen[config->eos_token_ids[0]], 0);
  for (int32_t id = 0; id < config->vocab_size; ++id) {
    if (id != config->eos_token_ids[0]) {
      EXPECT_GT(seen[id], 30) << "id " << id;  // ~77 expected
    }
  }
}

// A tokenizer with ids past the model's vocabulary belongs to another model: refused at load,
// not by every text request later with an error that blames the client.
TEST_F(EngineTest, TokenizerLargerThanTheModelIsRefused) {
  auto model = Model::Load(*dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(LoadCheckpointTokenizer(*dir_, (*model)->config()).ok());  // 259 ids, vocab 259
  ModelConfig smaller = (*model)->config();
  smaller.vocab_size = 200;
  const auto refused = LoadCheckpointTokenizer(*dir_, smaller);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::HasSubstr("ids go up to 258 but the model's vocab_size is 200"));
}

TEST_F(EngineTest, UnknownDeviceNamesTheChoices) {
  auto model = Model::Load(*dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  const absl::Status s = UseDevice(**model, "tpu");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("cpu, cuda, null"), std::string::npos) << s;
}

// A Cancel that arrives during the step in which its request finishes must not cancel a new
// request that reuses the id right after the final output. Sinks drive the timing (no sleeps):
// Z's sink submits X (max_tokens 1), X runs and finishes in the next step, in which Z's sink
// (delivered first: Z is older) cancels X; X's final output then resubmits the id. (The engine
// holds no lock while it calls a sink, so a test's sinks may call back into it.)
TEST_F(EngineTest, LateCancelDoesNotReachARequestReusingTheId) {
  EngineOptions options;
  options.max_batch_tokens = 64;
  auto engine = MakeEngine(options);
  Collector z, first_x, second_x;
  std::atomic<int> z_outputs{0};
  std::atomic<bool> x_submitted{false}, cancel_sent{false};
  EngineRequest x = Request(Prompt(3, 77), 1);
  x.request_id = "X";
  x.ignore_eos = true;
  // Each sink acts before it hands the output to its collector: once a final output is there,
  // the test may return and its locals go.
  auto x_sink = [&](RequestOutput out) {
    if (out.request_finished) {
      auto again = engine->Submit(x, second_x.Sink());  // the id is free again
      EXPECT_TRUE(again.ok()) << again.status();
    }
    first_x.Sink()(std::move(out));
  };
  EngineRequest zr = Request(Prompt(4, 78), 40);
  zr.ignore_eos = true;
  auto z_sink = [&, zsink = z.Sink()](RequestOutput out) {
    const int n = ++z_outputs;
    if (n == 2) {
      auto id = engine->Submit(x, x_sink);
      EXPECT_TRUE(id.ok()) << id.status();
      x_submitted = true;
    } else if (n == 3 && x_submitted) {
      engine->Cancel("X");  // X is running its only step
      cancel_sent = true;
    }
    zsink(std::move(out));
  };
  ASSERT_TRUE(engine->Submit(zr, z_sink).ok());
  z.WaitFinished();
  ASSERT_TRUE(cancel_sent);
  const RequestOutput first = first_x.WaitFinished();
  EXPECT_EQ(first.finish_reason, FinishReason::kLength) << "the first X finished its one token";
  const RequestOutput second = second_x.WaitFinished();
  EXPECT_TRUE(second.status.ok()) << second.status;
  EXPECT_EQ(second.finish_reason, FinishReason::kLength);
  EXPECT_EQ(second_x.Tokens().size(), 1u);
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

// --max-queue counts the requests beyond the free slots: with max_queue 0 an idle engine takes
// as many requests as it has slots (whether or not the step thread admitted them yet), and
// refuses the next.
TEST_F(EngineTest, QueueLimitCountsOnlyRequestsBeyondFreeSlots) {
  EngineOptions options;
  options.max_seqs = 2;
  options.max_queue = 0;
  auto engine = MakeEngine(options);
  Collector a, b, c;
  EngineRequest ra = Request(Prompt(5, 3), 240), rb = Request(Prompt(5, 4), 240);
  ra.ignore_eos = rb.ignore_eos = true;
  auto ida = engine->Submit(ra, a.Sink());
  ASSERT_TRUE(ida.ok()) << ida.status();
  auto idb = engine->Submit(rb, b.Sink());
  ASSERT_TRUE(idb.ok()) << idb.status();
  auto idc = engine->Submit(Request(Prompt(5, 5), 3), c.Sink());
  ASSERT_FALSE(idc.ok());
  EXPECT_EQ(idc.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(idc.status().message().find("max_queue 0"), std::string::npos);
  engine->Cancel(*ida);
  a.WaitFinished();
  // A's slot is free again: one more fits.
  auto idd = engine->Submit(Request(Prompt(5, 6), 3), c.Sink());
  ASSERT_TRUE(idd.ok()) << idd.status();
  c.WaitFinished();
  engine->Cancel(*idb);
  b.WaitFinished();
  ExpectPoolsEmpty(*engine);
}

// A cancel tagged with its submission's owner does not reach a later request reusing the id.
TEST_F(EngineTest, CancelWithOwnerReachesOnlyItsSubmission) {
  auto engine = MakeEngine({});
  Collector first, second;
  EngineRequest r = Request(Prompt(5, 8), 2);
  r.request_id = "same";
  r.owner = Engine::NewOwner();
  ASSERT_TRUE(engine->Submit(r, first.Sink()).ok());
  first.WaitFinished();
  const uint64_t old_owner = r.owner;
  r.owner = Engine::NewOwner();
  ASSERT_NE(r.owner, old_owner);
  r.max_tokens = 240;
  r.ignore_eos = true;
  ASSERT_TRUE(engine->Submit(r, second.Sink()).ok());
  second.WaitForTokens(1);
  engine->Cancel("same", old_owner);  // the first submission's late cancel: ignored
  // The engine applies a cancel within one step: a second request finishing proves the step
  // thread went past the stale cancel.
  Collector probe;
  ASSERT_TRUE(engine->Submit(Request(Prompt(4, 9), 2), probe.Sink()).ok());
  probe.WaitFinished();
  EXPECT_EQ(second.finished_count(), 0) << "the stale cancel reached the new request";
  engine->Cancel("same", r.owner);
  const RequestOutput last = second.WaitFinished();
  EXPECT_EQ(last.status.code(), absl::StatusCode::kCancelled);
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
  r.sampling.return_logprobs = true;
  r.sampling.top_logprobs = 10000;
  expect(r, "logprobs");
  r = Request({1}, 5);
  r.n = 17;
  expect(r, "n: 17 is outside [1, 16]");
  r = Request({1}, 5);
  r.n = 0;
  expect(r, "n: 0");
  r = Request({1}, 5);
  r.min_tokens = 6;
  expect(r, "min_tokens: 6 is outside [0, max_tokens = 5]");
  r = Request({1}, 5);
  r.sampling.min_p = -0.1f;
  expect(r, "min_p");
  r = Request({1}, 5);
  r.sampling.presence_penalty = 3;
  expect(r, "presence_penalty");
  r = Request({1}, 5);
  r.sampling.logit_bias = {{259, 1.0f}};
  expect(r, "logit_bias");
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

// Counts generated tokens as the engine reports them, for the test below.
class TokenCounter : public EngineMetrics {
 public:
  void OnGenerationTokens(int64_t n) override { tokens_ += n; }
  int64_t tokens() const { return tokens_; }

 private:
  std::atomic<int64_t> tokens_{0};
};

// Every token is in the generation counter before the output carrying it reaches the client:
// a client that has all its tokens and scrapes the metrics finds them counted. (The counter
// used to be bumped after the whole step's outputs were delivered; the TSan e2e run's slower
// timing showed a scrape in between.) The sink runs on the step thread, so this is exact.
TEST_F(EngineTest, GeneratedTokensAreCountedBeforeDelivery) {
  auto model = Model::Load(*dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  auto tokenizer = Tokenizer::LoadFromDir(*dir_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  TokenCounter counter;
  auto engine = Engine::Create(std::move(*model), std::move(*tokenizer), EngineOptions{}, &counter);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EngineRequest r = Request(Prompt(7, 3), 6);
  r.n = 2;
  r.ignore_eos = true;
  std::mutex mu;
  int64_t delivered = 0;
  std::vector<int64_t> unaccounted;  // tokens delivered but not yet counted, per output
  Collector c;
  OutputSink collect = c.Sink();
  ASSERT_TRUE((*engine)
                  ->Submit(r,
                           [&](RequestOutput out) {
                             {
                               std::lock_guard<std::mutex> lock(mu);
                               delivered += static_cast<int64_t>(out.token_ids.size());
                               unaccounted.push_back(delivered - counter.tokens());
                             }
                             collect(std::move(out));
                           })
                  .ok());
  c.WaitFinished();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(delivered, 12);
  for (int64_t u : unaccounted) EXPECT_LE(u, 0) << "tokens delivered before being counted";
}

// n = 4: one prefill (the prompt is computed once), four choices from one seed that differ, and
// the same four again when the request is repeated alone or beside other work.
TEST_F(EngineTest, ParallelSamplesShareOnePrefill) {
  EngineOptions options;
  options.max_seqs = 8;
  auto engine = MakeEngine(options);
  EngineRequest r = Request(Prompt(40, 21), 12);
  r.n = 4;
  r.ignore_eos = true;
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 1234;
  const int64_t before = engine->Stats().prompt_tokens_computed;
  Collector c;
  ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
  const RequestOutput last = c.WaitFinished();
  EXPECT_TRUE(last.status.ok()) << last.status;
  EXPECT_EQ(engine->Stats().prompt_tokens_computed - before, 40) << "one prefill, not four";
  std::set<std::vector<int32_t>> distinct;
  int finished = 0;
  for (const RequestOutput& o : c.Outputs()) finished += o.finished;
  EXPECT_EQ(finished, 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(c.Tokens(i).size(), 12u) << "choice " << i;
    distinct.insert(c.Tokens(i));
  }
  EXPECT_EQ(distinct.size(), 4u) << "the choices must differ";
  // Choice 0 is the plain seeded request.
  EXPECT_EQ(c.Tokens(0), Alone(r.prompt_ids, 12, r.sampling));
  ExpectPoolsEmpty(*engine);

  // Repeated beside other requests: the same four choices.
  std::vector<EngineRequest> requests = {Request(Prompt(9, 5), 20), r, Request(Prompt(30, 6), 7)};
  requests[0].ignore_eos = requests[2].ignore_eos = true;
  std::vector<Collector> collectors(requests.size());
  RunConcurrently(*engine, requests, collectors);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(collectors[1].Tokens(i), c.Tokens(i)) << "choice " << i;
  ExpectPoolsEmpty(*engine);
}

// Without room for all n at once, the other choices wait and compute the prompt themselves;
// the samples are still exactly those of the unpressured run.
TEST_F(EngineTest, ParallelSamplesUnderPressureGiveTheSameSamples) {
  EngineRequest r = Request(Prompt(25, 22), 10);
  r.n = 3;
  r.ignore_eos = true;
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.95f;
  r.sampling.seed = 77;
  std::vector<std::vector<int32_t>> reference;
  {
    auto engine = MakeEngine({});
    Collector c;
    ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
    c.WaitFinished();
    for (int i = 0; i < 3; ++i) reference.push_back(c.Tokens(i));
  }
  EngineOptions options;
  options.max_seqs = 1;  // one choice at a time
  auto engine = MakeEngine(options);
  Collector c;
  ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
  EXPECT_TRUE(c.WaitFinished().status.ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.Tokens(i), reference[i]) << "choice " << i;
  EXPECT_EQ(engine->Stats().prompt_tokens_computed, 3 * 25) << "each choice prefilled alone";
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, CancellingAParallelRequestEndsEveryChoice) {
  auto engine = MakeEngine({});
  EngineRequest r = Request(Prompt(8, 23), 200);
  r.n = 3;
  r.ignore_eos = true;
  Collector c;
  auto id = engine->Submit(r, c.Sink());
  ASSERT_TRUE(id.ok());
  c.WaitForTokens(2);
  engine->Cancel(*id);
  const RequestOutput last = c.WaitFinished();
  EXPECT_EQ(last.status.code(), absl::StatusCode::kCancelled);
  int finished = 0, request_finished = 0;
  for (const RequestOutput& o : c.Outputs()) {
    finished += o.finished;
    request_finished += o.request_finished;
  }
  EXPECT_EQ(finished, 3);
  EXPECT_EQ(request_finished, 1);
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, MinTokensHoldsBackStopTokens) {
  auto engine = MakeEngine({});
  const std::vector<int32_t> prompt = Prompt(7, 24);
  const std::vector<int32_t> greedy = Alone(prompt, 8);
  ASSERT_FALSE(greedy.empty());
  // The greedy first token as a stop token: it ends the request at once...
  EngineRequest r = Request(prompt, 8);
  r.stop_token_ids = {greedy[0]};
  Collector plain;
  ASSERT_TRUE(engine->Submit(r, plain.Sink()).ok());
  EXPECT_EQ(plain.WaitFinished().finish_reason, FinishReason::kStop);
  EXPECT_EQ(plain.Tokens().size(), 1u);
  // ...but with min_tokens 3 it is banned for the first 3 tokens.
  r.min_tokens = 3;
  r.ignore_eos = true;
  Collector held;
  ASSERT_TRUE(engine->Submit(r, held.Sink()).ok());
  held.WaitFinished();
  const std::vector<int32_t> ids = held.Tokens();
  ASSERT_GE(ids.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_NE(ids[i], greedy[0]) << "token " << i;
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, RepetitionPenaltyAvoidsPromptAndOutputTokens) {
  auto engine = MakeEngine({});
  const std::vector<int32_t> prompt = Prompt(12, 25);
  EngineRequest r = Request(prompt, 20);
  r.ignore_eos = true;
  Collector plain, penalised;
  ASSERT_TRUE(engine->Submit(r, plain.Sink()).ok());
  plain.WaitFinished();
  // A huge penalty pushes every seen token to ~0 or far below: greedy then never repeats one
  // while unseen tokens with positive logits remain (a 259-token vocabulary has plenty).
  r.sampling.repetition_penalty = 1e6f;
  ASSERT_TRUE(engine->Submit(r, penalised.Sink()).ok());
  penalised.WaitFinished();
  const std::vector<int32_t> ids = penalised.Tokens();
  ASSERT_EQ(ids.size(), 20u);
  std::set<int32_t> seen(prompt.begin(), prompt.end());
  for (int32_t id : ids) EXPECT_TRUE(seen.insert(id).second) << "token " << id << " repeated";
  EXPECT_NE(ids, plain.Tokens());
  // Presence and frequency penalties change greedy output through the same path.
  r.sampling.repetition_penalty = 1.0f;
  r.sampling.frequency_penalty = 2.0f;
  r.sampling.presence_penalty = 2.0f;
  Collector counted;
  ASSERT_TRUE(engine->Submit(r, counted.Sink()).ok());
  counted.WaitFinished();
  std::map<int32_t, int> counts;
  for (int32_t id : counted.Tokens()) counts[id]++;
  std::map<int32_t, int> plain_counts;
  for (int32_t id : plain.Tokens()) plain_counts[id]++;
  int max_count = 0, plain_max = 0;
  for (auto [id, n] : counts) max_count = std::max(max_count, n);
  for (auto [id, n] : plain_counts) plain_max = std::max(plain_max, n);
  EXPECT_LE(max_count, plain_max);
  ExpectPoolsEmpty(*engine);
}

TEST_F(EngineTest, StopStringIsNotMatchedBeforeMinTokens) {
  auto engine = MakeEngine({});
  EngineRequest r = Request(Prompt(6, 26), 30);
  r.ignore_eos = true;
  Collector full;
  ASSERT_TRUE(engine->Submit(r, full.Sink()).ok());
  full.WaitFinished();
  const std::vector<int32_t> ids = full.Tokens();
  ASSERT_EQ(ids.size(), 30u);
  // A stop string made of the first two tokens' bytes: it ends the request at once, unless
  // min_tokens says generation must go on; then a later occurrence (if any) or the length ends.
  const std::string text = full.Text();
  const std::string stop = engine->tokenizer().Decode({ids[0], ids[1]}, false);
  if (stop.size() != 2 || text.substr(0, 2) != stop) GTEST_SKIP() << "non-ASCII start";
  r.stop = {stop};
  Collector early;
  ASSERT_TRUE(engine->Submit(r, early.Sink()).ok());
  EXPECT_EQ(early.WaitFinished().finish_reason, FinishReason::kStop);
  EXPECT_EQ(early.Tokens().size(), 2u);
  EXPECT_EQ(early.Text(), "");
  r.min_tokens = 5;
  Collector late;
  ASSERT_TRUE(engine->Submit(r, late.Sink()).ok());
  late.WaitFinished();
  EXPECT_GE(late.Tokens().size(), 5u);
  EXPECT_EQ(late.Text().substr(0, 2), stop) << "the early occurrence is plain text";
  ExpectPoolsEmpty(*engine);
}

}  // namespace
}  // namespace jetserve
