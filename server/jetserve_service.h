// The jetserve.v1.JetServe service on gRPC's callback API. It is registered before the model is
// loaded (so health checks answer while it loads) and serves UNAVAILABLE until SetEngine.
//
// With API keys, every method first checks the call's `authorization` metadata and refuses
// with UNAUTHENTICATED. The check lives here, not in gRPC's AuthMetadataProcessor (which runs
// only on TLS ports) or an interceptor (which cannot refuse a call), and it covers only this
// service: grpc.health.v1.Health stays open for orchestrators' probes (docs/security.md).
#ifndef JETSERVE_SERVER_JETSERVE_SERVICE_H_
#define JETSERVE_SERVER_JETSERVE_SERVICE_H_

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>

#include "engine/engine.h"
#include "jetserve/v1/jetserve.grpc.pb.h"
#include "server/api_keys.h"
#include "server/in_flight.h"
#include "server/prometheus_metrics.h"
#include "server/task_queue.h"

namespace jetserve {

class JetServeService final : public v1::JetServe::CallbackService {
 public:
  // `device` is reported by GetModelInfo. `api_keys`: null accepts every call; otherwise it
  // must outlive the service. `max_pending_output_bytes`: a Generate stream's output buffered
  // for a client that reads slowly, at most (generate_reactor.h).
  JetServeService(std::string device, const ApiKeys* api_keys,
                  size_t max_pending_output_bytes = size_t{16} << 20);

  // Waits until every Generate stream has ended (written its last message and status, or lost
  // its client), or until `deadline`. True when none is left. For shutdown, after the engine
  // finished every request: the gRPC server's own Shutdown would also wait for streams that
  // never end by themselves (a health Watch).
  bool DrainStreams(std::chrono::steady_clock::time_point deadline) {
    return streams_.WaitIdle(deadline);
  }
  int64_t LiveStreams() { return streams_.count(); }

  // Starts serving with `engine`, which must outlive the gRPC server. `metrics` may be null.
  // `model_name` is reported by GetModelInfo. Call once.
  void SetEngine(Engine* engine, PrometheusMetrics* metrics, std::string model_name);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::GetModelInfoResponse* response) override;

 private:
  // OK, or UNAUTHENTICATED (logged) when API keys are on and the call lacks a valid one.
  absl::Status Authenticate(const grpc::CallbackServerContext& context,
                            std::string_view method) const;

  // Null until the model is loaded. SetEngine writes metrics_ and model_name_ before it
  // publishes engine_ (release); readers use them only after acquiring a non-null engine_.
  std::atomic<Engine*> engine_{nullptr};
  PrometheusMetrics* metrics_ = nullptr;
  std::string model_name_;
  const std::string device_;
  const ApiKeys* const api_keys_;
  const size_t max_pending_output_bytes_;
  // The Generate streams' writes (generate_reactor.h). Destroyed with the service, after the
  // engine (which must not deliver outputs any more) and the gRPC server.
  TaskQueue writes_;
  InFlightCounter streams_;  // live Generate reactors
};

}  // namespace jetserve

#endif  // JETSERVE_SERVER_JETSERVE_SERVICE_H_
