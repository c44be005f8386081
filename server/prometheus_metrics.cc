#include "server/prometheus_metrics.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "server/status_util.h"

namespace jetserve {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// Latency buckets, in seconds, chosen to resolve both the millisecond steps of a small model on
// CPU and the multi-second requests of a 4B model.
const Histogram::BucketBoundaries kTtftBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const Histogram::BucketBoundaries kTokenLatencyBuckets = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3, 0.4,
    0.5,   0.75,  1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
const Histogram::BucketBoundaries kRequestLatencyBuckets = {
    0.01, 0.05, 0.1,  0.3,  0.5,  0.8,  1.0,   1.5,   2.0,   2.5,   5.0,    10.0,
    15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const Histogram::BucketBoundaries kIterationTokenBuckets = {1,   8,    16,   32,   64,   128,  256,
                                                            512, 1024, 2048, 4096, 8192, 16384};
const Histogram::BucketBoundaries kIterationSequenceBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};
const Histogram::BucketBoundaries kStepBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};

prometheus::Labels ModelLabel(const std::string& model_name) {
  return {{"model_name", model_name}};
}

}  // namespace

std::vector<double> OneTwoFiveBuckets(int64_t max_value) {
  std::vector<double> out;
  for (int64_t decade = 1;; decade *= 10) {
    for (int64_t m : {1, 2, 5}) {
      out.push_back(static_cast<double>(m * decade));
      if (m * decade >= max_value) return out;
    }
  }
}

PrometheusMetrics::PrometheusMetrics(prometheus::Registry& registry, const std::string& model_name,
                                     int64_t max_model_len) {
  const prometheus::Labels labels = ModelLabel(model_name);
  auto counter = [&](const std::string& name, const std::string& help) {
    return &BuildCounter().Name(name).Help(help).Labels(labels).Register(registry).Add({});
  };
  auto histogram = [&](const std::string& name, const std::string& help,
                       const Histogram::BucketBoundaries& buckets) {
    return &BuildHistogram().Name(name).Help(help).Labels(labels).Register(registry).Add({},
                                                                                         buckets);
  };
  prompt_tokens_ = counter("jetserve:prompt_tokens_total",
                           "Prompt tokens of requests, each request's counted once (see "
                           "jetserve:prefill_tokens_computed_total for the work done).");
  generation_tokens_ = counter("jetserve:generation_tokens_total", "Tokens generated.");
  preemptions_ = counter("jetserve:num_preemptions_total",
                         "Requests preempted (memory taken back, to be recomputed).");
  success_family_ = &BuildCounter()
                         .Name("jetserve:request_success_total")
                         .Help(
                             "Requests finished, by finish reason (stop, length, cancelled, "
                             "error).")
                         .Labels(labels)
                         .Register(registry);
  for (FinishReason r : {FinishReason::kStop, FinishReason::kLength, FinishReason::kCancelled,
                         FinishReason::kError}) {
    success_[r] = &success_family_->Add({{"finished_reason", std::string(FinishReasonName(r))}});
  }
  rejected_family_ = &BuildCounter()
                          .Name("jetserve:request_rejected_total")
                          .Help(
                              "Requests refused before they started, by reason (the gRPC "
                              "status code in snake case).")
                          .Labels(labels)
                          .Register(registry);
  for (absl::StatusCode code :
       {absl::StatusCode::kInvalidArgument, absl::StatusCode::kResourceExhausted,
        absl::StatusCode::kUnavailable}) {
    rejected_family_->Add({{"reason", StatusCodeSnakeName(code)}});
  }
  ttft_ = histogram("jetserve:time_to_first_token_seconds",
                    "Time from arrival to the first generated token.", kTtftBuckets);
  itl_ = histogram("jetserve:inter_token_latency_seconds", "Time between consecutive tokens.",
                   kTokenLatencyBuckets);
  tpot_ =
      histogram("jetserve:time_per_output_token_seconds",
                "Alias of inter_token_latency_seconds, for vLLM dashboards.", kTokenLatencyBuckets);
  e2e_ = histogram("jetserve:e2e_request_latency_seconds",
                   "Time from arrival to the last token, for every finished request.",
                   kRequestLatencyBuckets);
  queue_time_ = histogram("jetserve:request_queue_time_seconds",
                          "Time from arrival until first scheduled.", kRequestLatencyBuckets);
  iteration_tokens_ =
      histogram("jetserve:iteration_tokens_total",
                "Tokens per engine step (decodes plus prefill chunks).", kIterationTokenBuckets);
  iteration_sequences_ = histogram("jetserve:iteration_sequences", "Sequences per engine step.",
                                   kIterationSequenceBuckets);
  step_seconds_ =
      histogram("jetserve:step_duration_seconds",
                "Duration of one engine step: scheduling and the forward pass (sampling "
                "and delivery follow).",
                kStepBuckets);
  const std::vector<double> token_buckets = OneTwoFiveBuckets(std::max<int64_t>(max_model_len, 1));
  request_prompt_tokens_ = histogram("jetserve:request_prompt_tokens",
                                     "Prompt tokens per finished request.", token_buckets);
  request_generation_tokens_ = histogram("jetserve:request_generation_tokens",
                                         "Generated tokens per finished request.", token_buckets);
}

void PrometheusMetrics::OnStep(const StepStats& stats) {
  iteration_tokens_->Observe(static_cast<double>(stats.batch_tokens));
  iteration_sequences_->Observe(static_cast<double>(stats.batch_sequences));
  step_seconds_->Observe(stats.step_seconds);
}

void PrometheusMetrics::OnPromptTokens(int64_t n) { prompt_tokens_->Increment(n); }

void PrometheusMetrics::OnGenerationTokens(int64_t n) { generation_tokens_->Increment(n); }

void PrometheusMetrics::OnPreemption() { preemptions_->Increment(); }

void PrometheusMetrics::OnQueueTime(double seconds) { queue_time_->Observe(seconds); }

void PrometheusMetrics::OnFirstToken(double seconds) { ttft_->Observe(seconds); }

void PrometheusMetrics::OnInterTokenLatency(double seconds) {
  itl_->Observe(seconds);
  tpot_->Observe(seconds);
}

void PrometheusMetrics::OnRequestFinished(FinishReason reason, double e2e_seconds,
                                          int64_t prompt_tokens, int64_t completion_tokens) {
  success_.at(reason)->Increment();
  e2e_->Observe(e2e_seconds);
  request_prompt_tokens_->Observe(static_cast<double>(prompt_tokens));
  request_generation_tokens_->Observe(static_cast<double>(completion_tokens));
}

void PrometheusMetrics::OnRequestRejected(absl::StatusCode code) {
  // Family::Add is thread-safe and returns the existing series for known labels.
  rejected_family_->Add({{"reason", StatusCodeSnakeName(code)}}).Increment();
}

std::vector<prometheus::MetricFamily> EngineStatsCollector::Collect() const {
  const Engine* engine = engine_.load(std::memory_order_acquire);
  if (engine == nullptr) return {};
  const EngineStats stats = engine->Stats();
  const prometheus::ClientMetric::Label model{"model_name", model_name_};
  auto gauge = [&](std::string name, std::string help, double value) {
    prometheus::MetricFamily family{
        std::move(name), std::move(help), prometheus::MetricType::Gauge, {}};
    prometheus::ClientMetric m;
    m.label = {model};
    m.gauge.value = value;
    family.metric.push_back(std::move(m));
    return family;
  };
  auto usage = [&](const std::string& pool) {
    for (const PoolStats& p : stats.pools) {
      if (p.name == pool && p.total > 0) return static_cast<double>(p.used) / p.total;
    }
    return 0.0;
  };
  std::vector<prometheus::MetricFamily> out;
  out.push_back(gauge("jetserve:num_requests_running", "Requests holding memory and generating.",
                      static_cast<double>(stats.num_running)));
  out.push_back(gauge("jetserve:num_requests_waiting",
                      "Requests queued, not yet admitted (preempted ones included).",
                      static_cast<double>(stats.num_waiting)));
  out.push_back(gauge("jetserve:kv_cache_usage_perc",
                      "Fraction of paged KV blocks in use (1 = full; 0 without attention "
                      "layers).",
                      usage("kv_blocks")));
  out.push_back(gauge("jetserve:state_slot_usage_perc",
                      "Fraction of recurrent-state slots (jet layers) in use.",
                      usage("state_slots")));
  out.push_back(gauge("jetserve:window_ring_usage_perc",
                      "Fraction of sliding-window rings (swa layers) in use.",
                      usage("window_rings")));
  prometheus::MetricFamily used{"jetserve:memory_pool_used",
                                "Units in use per memory pool (state_slots, window_rings, "
                                "kv_blocks).",
                                prometheus::MetricType::Gauge,
                                {}};
  prometheus::MetricFamily total{
      "jetserve:memory_pool_capacity", "Units per memory pool.", prometheus::MetricType::Gauge, {}};
  for (const PoolStats& p : stats.pools) {
    prometheus::ClientMetric m;
    m.label = {model, {"pool", p.name}};
    m.gauge.value = static_cast<double>(p.used);
    used.metric.push_back(m);
    m.gauge.value = static_cast<double>(p.total);
    total.metric.push_back(std::move(m));
  }
  out.push_back(std::move(used));
  out.push_back(std::move(total));
  // Read from the engine, like the gauges: prefill work actually done. A request with n > 1
  // computes its prompt once; a preempted one computes it again.
  prometheus::MetricFamily computed{"jetserve:prefill_tokens_computed_total",
                                    "Prompt tokens run through the model (shared prefills once, "
                                    "recomputation after preemption again).",
                                    prometheus::MetricType::Counter,
                                    {}};
  prometheus::ClientMetric c;
  c.label = {model};
  c.counter.value = static_cast<double>(stats.prompt_tokens_computed);
  computed.metric.push_back(std::move(c));
  out.push_back(std::move(computed));
  return out;
}

}  // namespace jetserve
