// The engine's metrics as Prometheus families named like vLLM's (vllm:X -> jetserve:X), so that
// dashboards and the Kubernetes Gateway API Inference Extension built for vLLM read them as is.
// Every series carries the label model_name. Full list: docs/api.md, "Metrics".
#ifndef JETSERVE_SERVER_PROMETHEUS_METRICS_H_
#define JETSERVE_SERVER_PROMETHEUS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "engine/metrics.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace jetserve {

// Counters and histograms fed by the engine as it runs (EngineMetrics), plus the requests the
// server turns away. Thread-safe: prometheus-cpp's counters are atomic and its histograms
// locked, so the step thread and gRPC threads may report concurrently.
class PrometheusMetrics final : public EngineMetrics {
 public:
  // Registers the families in `registry`; `max_model_len` bounds the buckets of the
  // token-count histograms. `registry` must outlive this object.
  PrometheusMetrics(prometheus::Registry& registry, const std::string& model_name,
                    int64_t max_model_len);

  void OnStep(const StepStats& stats) override;
  void OnPromptTokens(int64_t n) override;
  void OnGenerationTokens(int64_t n) override;
  void OnPreemption() override;
  void OnQueueTime(double seconds) override;
  void OnFirstToken(double seconds) override;
  void OnInterTokenLatency(double seconds) override;
  void OnRequestFinished(FinishReason reason, double e2e_seconds, int64_t prompt_tokens,
                         int64_t completion_tokens) override;
  // The engine's own rejection report carries no reason, and the server turns some requests
  // away before they reach the engine; the server therefore counts every rejection itself
  // through OnRequestRejected, and this is deliberately a no-op (no double counting).
  void OnRejected() override {}

  // A request refused before it started (invalid, queue full, shutting down, ...), counted in
  // jetserve:request_rejected_total{reason=<status code in snake case>}.
  void OnRequestRejected(absl::StatusCode code);

 private:
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Counter* preemptions_;
  prometheus::Family<prometheus::Counter>* success_family_;
  std::map<FinishReason, prometheus::Counter*> success_;  // filled in the constructor only
  prometheus::Family<prometheus::Counter>* rejected_family_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* tpot_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_time_;
  prometheus::Histogram* iteration_tokens_;
  prometheus::Histogram* iteration_sequences_;
  prometheus::Histogram* step_seconds_;
  prometheus::Histogram* request_prompt_tokens_;
  prometheus::Histogram* request_generation_tokens_;
};

// Gauges of the engine's current state (running and waiting requests, memory pool usage), read
// from Engine::Stats() at scrape time: exact even when the engine is idle and runs no steps
// that could report them. Empty until SetEngine.
class EngineStatsCollector final : public prometheus::Collectable {
 public:
  explicit EngineStatsCollector(std::string model_name) : model_name_(std::move(model_name)) {}
  // `engine` must outlive every later Collect (unregister this collector before destroying it).
  void SetEngine(const Engine* engine) { engine_.store(engine, std::memory_order_release); }
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string model_name_;
  std::atomic<const Engine*> engine_{nullptr};
};

// Bucket bounds 1, 2, 5, 10, 20, 50, ... up to and including the first >= max_value.
std::vector<double> OneTwoFiveBuckets(int64_t max_value);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_PROMETHEUS_METRICS_H_
