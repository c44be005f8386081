// What the engine reports as it runs. The engine counts where the facts are; the server binds
// this interface to Prometheus. Every method is called from the engine's step thread, except
// OnRejected, which is called from Submit's caller.
#ifndef JETSERVE_ENGINE_METRICS_H_
#define JETSERVE_ENGINE_METRICS_H_

#include <cstdint>

#include "engine/request.h"

namespace jetserve {

struct StepStats {
  int64_t num_running = 0;         // sequences holding memory
  int64_t num_waiting = 0;         // queued, not yet admitted (including preempted)
  int64_t batch_tokens = 0;        // tokens in this step's forward pass
  int64_t batch_sequences = 0;     // sequences in this step
  double kv_usage = 0.0;           // fraction of KV blocks in use (0 when the model has no attn)
  double state_slot_usage = 0.0;   // fraction of state slots in use
  double window_ring_usage = 0.0;  // fraction of window rings in use
  double step_seconds = 0.0;
};

class EngineMetrics {
 public:
  virtual ~EngineMetrics() = default;
  // After every step: gauges (running, waiting, usage) and the step histograms.
  virtual void OnStep(const StepStats& stats) {}
  // Gauges only, whenever a request finishes (in or outside a step), before its final output is
  // delivered: a client that has its final message sees usage that already excludes it.
  virtual void OnUsage(const StepStats& usage) {}
  virtual void OnPromptTokens(int64_t n) {}      // prompt tokens computed (prefill)
  virtual void OnGenerationTokens(int64_t n) {}  // tokens generated
  virtual void OnPreemption() {}
  virtual void OnQueueTime(double seconds) {}   // arrival -> first scheduled
  virtual void OnFirstToken(double seconds) {}  // arrival -> first token
  virtual void OnInterTokenLatency(double seconds) {}
  virtual void OnRequestFinished(FinishReason reason, double e2e_seconds, int64_t prompt_tokens,
                                 int64_t completion_tokens) {}
  virtual void OnRejected() {}  // Submit refused: queue full, invalid request or shutting down
};

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_METRICS_H_
