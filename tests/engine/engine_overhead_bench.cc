// The engine's own cost per step, with no forward pass: `--device null` (null_backend.h) on the
// embedded default model, every request submitted at once and run to its length, outputs
// counted by a sink that does nothing else. All the time measured is the step thread's work —
// scheduling, the step's batch and metadata, sampling bookkeeping, detokenising, stop matching,
// delivering — which a device's forward pass adds to. Prints one JSON object:
//   engine_overhead_bench [requests=768] [prompt_tokens=128] [max_tokens=256]
// CTest runs it once with small numbers (engine_overhead_bench_smoke) so that it keeps working;
// docs/performance.md ("The server's own overhead") has the measured numbers.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "engine/default_model.h"
#include "engine/device.h"
#include "engine/engine.h"

namespace jetserve {
namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "engine_overhead_bench: %s\n", what.c_str());
  return 1;
}

int Run(int64_t requests, int64_t prompt_tokens, int64_t max_tokens) {
  absl::StatusOr<std::string> dir = EnsureDefaultModel();
  if (!dir.ok()) return Fail(std::string(dir.status().message()));
  auto model = Model::Load(*dir);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  if (absl::Status s = UseDevice(**model, "null"); !s.ok()) return Fail(std::string(s.message()));
  auto tokenizer = Tokenizer::LoadFromDir(*dir);
  if (!tokenizer.ok()) return Fail(std::string(tokenizer.status().message()));
  EngineOptions options;
  options.max_seqs = requests;
  options.max_queue = requests;
  options.max_batch_tokens = std::max<int64_t>(requests, 2048);
  options.memory_bytes = int64_t{64} << 30;  // bookkeeping only: the null device allocates none
  options.max_model_len = prompt_tokens + max_tokens;
  auto engine = Engine::Create(std::move(*model), std::move(*tokenizer), options, nullptr);
  if (!engine.ok()) return Fail(std::string(engine.status().message()));

  std::atomic<int64_t> tokens{0}, finished{0}, failed{0};
  absl::Notification all_done;
  const auto start = std::chrono::steady_clock::now();
  const int64_t steps_before = (*engine)->Stats().steps;
  for (int64_t r = 0; r < requests; ++r) {
    EngineRequest request;
    for (int64_t i = 0; i < prompt_tokens; ++i) {
      request.prompt_ids.push_back(static_cast<int32_t>(32 + (r * 7 + i * 13) % 90));
    }
    request.max_tokens = static_cast<int32_t>(max_tokens);
    request.sampling.seed = static_cast<uint64_t>(r);
    auto id = (*engine)->Submit(std::move(request), [&](RequestOutput out) {
      tokens += static_cast<int64_t>(out.token_ids.size());
      if (!out.request_finished) return;
      if (!out.status.ok()) ++failed;
      if (++finished == requests) all_done.Notify();
    });
    if (!id.ok()) return Fail(std::string(id.status().message()));
  }
  all_done.WaitForNotification();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t steps = (*engine)->Stats().steps - steps_before;
  if (failed > 0) return Fail(std::to_string(failed.load()) + " requests failed");
  std::printf(
      "{\"requests\": %lld, \"prompt_tokens\": %lld, \"max_tokens\": %lld, \"seconds\": %.4f, "
      "\"steps\": %lld, \"tokens\": %lld, \"tokens_per_s\": %.1f, \"ms_per_step\": %.4f, "
      "\"us_per_token\": %.4f}\n",
      static_cast<long long>(requests), static_cast<long long>(prompt_tokens),
      static_cast<long long>(max_tokens), seconds, static_cast<long long>(steps),
      static_cast<long long>(tokens.load()), tokens.load() / seconds,
      1e3 * seconds / std::max<int64_t>(steps, 1), 1e6 * seconds / std::max<int64_t>(tokens, 1));
  return tokens.load() == requests * max_tokens ? 0 : Fail("not every request ran to its length");
}

}  // namespace
}  // namespace jetserve

int main(int argc, char** argv) {
  auto arg = [&](int i, int64_t fallback) {
    return argc > i ? std::strtoll(argv[i], nullptr, 10) : fallback;
  };
  const int64_t requests = arg(1, 768), prompt = arg(2, 128), max_tokens = arg(3, 256);
  if (requests < 1 || prompt < 1 || max_tokens < 1) {
    std::fprintf(stderr, "usage: engine_overhead_bench [requests] [prompt_tokens] [max_tokens]\n");
    return 2;
  }
  return jetserve::Run(requests, prompt, max_tokens);
}
