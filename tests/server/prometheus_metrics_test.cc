// The Prometheus families: vLLM-style names, types, the model_name label, and what each
// EngineMetrics call adds.
#include "server/prometheus_metrics.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace jetserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Scrape(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

TEST(OneTwoFiveBuckets, CoversTheMaximum) {
  EXPECT_THAT(OneTwoFiveBuckets(1), ElementsAre(1));
  EXPECT_THAT(OneTwoFiveBuckets(7), ElementsAre(1, 2, 5, 10));
  EXPECT_THAT(OneTwoFiveBuckets(8192),
              ElementsAre(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000));
}

TEST(PrometheusMetrics, FamiliesAndCounts) {
  prometheus::Registry registry;
  PrometheusMetrics metrics(registry, "m1", 8192);
  metrics.OnPromptTokens(10);
  metrics.OnGenerationTokens(3);
  metrics.OnGenerationTokens(2);
  metrics.OnPreemption();
  metrics.OnQueueTime(0.01);
  metrics.OnFirstToken(0.02);
  metrics.OnInterTokenLatency(0.003);
  StepStats step;
  step.batch_tokens = 12;
  step.batch_sequences = 2;
  step.step_seconds = 0.004;
  metrics.OnStep(step);
  metrics.OnRequestFinished(FinishReason::kLength, 0.5, 10, 5);
  metrics.OnRequestFinished(FinishReason::kCancelled, 0.1, 4, 0);
  metrics.OnRejected();  // the engine's report: counted by the server instead
  metrics.OnRequestRejected(absl::StatusCode::kResourceExhausted);
  metrics.OnRequestRejected(absl::StatusCode::kAlreadyExists);
  const std::string text = Scrape(registry);
  for (const char* line : {
           "# TYPE jetserve:prompt_tokens_total counter",
           "jetserve:prompt_tokens_total{model_name=\"m1\"} 10",
           "jetserve:generation_tokens_total{model_name=\"m1\"} 5",
           "jetserve:num_preemptions_total{model_name=\"m1\"} 1",
           "jetserve:request_success_total{model_name=\"m1\",finished_reason=\"length\"} 1",
           "jetserve:request_success_total{model_name=\"m1\",finished_reason=\"cancelled\"} 1",
           "jetserve:request_success_total{model_name=\"m1\",finished_reason=\"stop\"} 0",
           "jetserve:request_success_total{model_name=\"m1\",finished_reason=\"error\"} 0",
           "jetserve:request_rejected_total{model_name=\"m1\",reason=\"resource_exhausted\"} 1",
           "jetserve:request_rejected_total{model_name=\"m1\",reason=\"already_exists\"} 1",
           "jetserve:request_rejected_total{model_name=\"m1\",reason=\"invalid_argument\"} 0",
           "# TYPE jetserve:time_to_first_token_seconds histogram",
           "jetserve:time_to_first_token_seconds_count{model_name=\"m1\"} 1",
           "jetserve:inter_token_latency_seconds_count{model_name=\"m1\"} 1",
           "jetserve:time_per_output_token_seconds_count{model_name=\"m1\"} 1",
           "jetserve:e2e_request_latency_seconds_count{model_name=\"m1\"} 2",
           "jetserve:request_queue_time_seconds_count{model_name=\"m1\"} 1",
           "jetserve:iteration_tokens_total_sum{model_name=\"m1\"} 12",
           "jetserve:iteration_sequences_sum{model_name=\"m1\"} 2",
           "jetserve:step_duration_seconds_count{model_name=\"m1\"} 1",
           "jetserve:request_prompt_tokens_sum{model_name=\"m1\"} 14",
           "jetserve:request_generation_tokens_sum{model_name=\"m1\"} 5",
           "jetserve:request_generation_tokens_bucket{model_name=\"m1\",le=\"10000\"} 2",
       }) {
    EXPECT_THAT(text, HasSubstr(std::string(line) + "\n")) << line;
  }
}

TEST(EngineStatsCollector, EmptyWithoutEngine) {
  EngineStatsCollector collector("m1");
  EXPECT_TRUE(collector.Collect().empty());
}

}  // namespace
}  // namespace jetserve
