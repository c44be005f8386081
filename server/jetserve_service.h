// The jetserve.v1.JetServe service on gRPC's callback API. It is registered before the model is
// loaded (so health checks answer while it loads) and serves UNAVAILABLE until SetEngine.
#ifndef JETSERVE_SERVER_JETSERVE_SERVICE_H_
#define JETSERVE_SERVER_JETSERVE_SERVICE_H_

#include <atomic>
#include <string>

#include "engine/engine.h"
#include "jetserve/v1/jetserve.grpc.pb.h"
#include "server/prometheus_metrics.h"

namespace jetserve {

class JetServeService final : public v1::JetServe::CallbackService {
 public:
  // `device` is reported by GetModelInfo.
  explicit JetServeService(std::string device) : device_(std::move(device)) {}

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
  // Null until the model is loaded. SetEngine writes metrics_ and model_name_ before it
  // publishes engine_ (release); readers use them only after acquiring a non-null engine_.
  std::atomic<Engine*> engine_{nullptr};
  PrometheusMetrics* metrics_ = nullptr;
  std::string model_name_;
  const std::string device_;
};

}  // namespace jetserve

#endif  // JETSERVE_SERVER_JETSERVE_SERVICE_H_
