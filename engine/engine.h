// The serving engine: one model on one device, a continuous-batching scheduler, and a single
// step thread that runs it. Submit and Cancel are thread-safe; outputs stream to each request's
// sink from the step thread.
#ifndef JETSERVE_ENGINE_ENGINE_H_
#define JETSERVE_ENGINE_ENGINE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/memory/hybrid_memory.h"
#include "engine/metrics.h"
#include "engine/model.h"
#include "engine/request.h"
#include "engine/tokenizer/tokenizer.h"

namespace jetserve {

struct EngineOptions {
  int64_t max_seqs = 32;           // sequences running at once (state slots / window rings)
  int64_t max_batch_tokens = 512;  // tokens per forward step (decodes + prefill chunks)
  // Requests waiting beyond the free sequence slots; beyond, Submit is RESOURCE_EXHAUSTED
  // (0: none wait, a request is refused when every slot is taken).
  int64_t max_queue = 256;
  int64_t memory_bytes = int64_t{1} << 30;  // state slots + window rings + KV blocks
  int64_t page_size = 16;                   // positions per KV block
  int64_t max_model_len = 0;  // prompt + output limit; 0: the model's max_position_embeddings
  int32_t max_logprobs = 20;
  int32_t max_n = 16;  // parallel samples per request
  // Request limits (0: as large as max_model_len allows).
  int64_t max_prompt_tokens = 0;
  int64_t max_output_tokens = 0;  // the largest max_tokens accepted
  int32_t max_stop_strings = 16;
  int32_t max_stop_length = 256;  // bytes per stop string
  // Test-only fault injection: every forward pass after this many fails (0: never). The
  // engine then fails all its requests and reports a fatal error (see on_fatal_error).
  int64_t fail_forward_after_steps = 0;
  // Called once, from the step thread, when the engine can no longer serve (a forward pass
  // failed). The engine has already failed every request and refuses new ones.
  std::function<void(const absl::Status&)> on_fatal_error;
};

// Limits a request is validated against; reported by the server's GetModelInfo.
struct EngineLimits {
  int64_t max_model_len = 0;
  int64_t max_seqs = 0;
  int64_t max_batch_tokens = 0;
  int64_t max_queue = 0;
  int32_t max_logprobs = 0;
  int32_t max_n = 0;
  int64_t max_prompt_tokens = 0;
  int64_t max_output_tokens = 0;
  int32_t max_stop_strings = 0;
  int32_t max_stop_length = 0;
};

struct PoolStats {
  std::string name;  // "state_slots", "window_rings", "kv_blocks"
  int64_t used = 0;
  int64_t total = 0;
};

struct EngineStats {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  std::vector<PoolStats> pools;
  int64_t steps = 0;
  int64_t prompt_tokens_computed = 0;  // prefill work done, recomputation included
  int64_t preemptions = 0;
};

// The checkpoint's own tokenizer (tokenizer.json in `dir`), checked against the model: one with
// ids past the model's vocab_size belongs to another model (every text request would fail with
// an error blaming the client).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadCheckpointTokenizer(const std::string& dir,
                                                                   const ModelConfig& config);

class Engine {
 public:
  // Sizes the memory pools and starts the step thread. `metrics` may be null; it must outlive
  // the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<Model> model,
                                                        std::unique_ptr<Tokenizer> tokenizer,
                                                        const EngineOptions& options,
                                                        EngineMetrics* metrics);
  ~Engine();  // Shutdown(0) if not done yet.

  // Validates and tokenises `request` on the caller's thread and queues it. Returns the request
  // id. Errors (the sink is then never called): INVALID_ARGUMENT naming the field and limit,
  // ALREADY_EXISTS for a duplicate running request_id, RESOURCE_EXHAUSTED when the waiting
  // queue is full, UNAVAILABLE when shutting down.
  absl::StatusOr<std::string> Submit(EngineRequest request, OutputSink sink);

  // Finishes the request as cancelled (status CANCELLED) within one step and frees its memory.
  // Unknown or finished ids are ignored; with a nonzero `owner`, so is a request submitted with
  // another owner (EngineRequest::owner).
  void Cancel(const std::string& request_id, uint64_t owner = 0);

  // A process-unique nonzero owner tag for EngineRequest::owner.
  static uint64_t NewOwner();

  // Refuses new requests (UNAVAILABLE) from now on; work already accepted goes on. Idempotent.
  void StopAccepting();

  // Stops accepting new requests, lets running and queued ones finish for up to `grace`, then
  // cancels the rest (status UNAVAILABLE) and stops the step thread. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);
  bool accepting() const;

  EngineStats Stats() const;
  EngineLimits limits() const;
  const ModelConfig& config() const;
  const Tokenizer& tokenizer() const;
  // The checkpoint's chat template (or the documented ChatML fallback: is_fallback()); null
  // when the tokenizer has no ChatML tokens (requests with messages are then refused).
  const ChatTemplate* chat_template() const;
  std::string model_name() const;  // the checkpoint directory's base name

  class Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_ENGINE_H_
