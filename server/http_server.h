// The OpenAI-compatible HTTP API (cpp-httplib): POST /v1/completions, POST /v1/chat/completions
// (JSON, or server-sent events with stream: true, ending with "data: [DONE]"), GET /v1/models
// and GET /health. The same engine and metrics as the gRPC API.
//
// Security: HTTPS (and client certificates) with a TlsConfig; with ApiKeys every path but
// /health needs `Authorization: Bearer KEY`, else 401 with an OpenAI error object (checked
// before routing, so unknown paths do not reveal themselves either).
//
// Threads: cpp-httplib serves each connection on a worker of its thread pool; a request's
// handler submits to the engine and then waits on its own queue, which the engine's step
// thread fills through the OutputSink (never blocking it).
#ifndef JETSERVE_SERVER_HTTP_SERVER_H_
#define JETSERVE_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "server/api_keys.h"
#include "server/prometheus_metrics.h"
#include "server/tls_config.h"

namespace httplib {
class Server;
}

namespace jetserve {

class HttpServer {
 public:
  HttpServer();
  ~HttpServer();  // Stop()

  // Binds host:port (0: a free port) and starts serving on `threads` workers; request bodies
  // above `max_body_bytes` get 413. Returns the port. `tls`: HTTPS (null: plain HTTP);
  // `api_keys`: required keys (null: none). Both must outlive Stop(). Call once.
  absl::StatusOr<int> Start(const std::string& host, int port, int threads, int64_t max_body_bytes,
                            const TlsConfig* tls, const ApiKeys* api_keys);

  // Starts answering with `engine` (until then: 503 "the model is loading"). `engine` must
  // outlive Stop(); `metrics` may be null. Call once.
  void SetEngine(Engine* engine, PrometheusMetrics* metrics, std::string model_name);

  // Waits until every completion accepted has been answered (a stream's last chunk written)
  // or abandoned by its client, or until `deadline`. True when none is left. Call after the
  // engine has finished every request (Engine::Shutdown) and before Stop, which cuts off
  // streams still writing.
  bool Drain(std::chrono::steady_clock::time_point deadline);
  int64_t InFlight() const;  // completions being answered

  // Stops listening and waits for the handlers to return. Call after the engine has finished
  // every request (Engine::Shutdown), so that streams end with their final output.
  void Stop();

 private:
  class Handlers;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<Handlers> handlers_;
  std::thread thread_;
};

}  // namespace jetserve

#endif  // JETSERVE_SERVER_HTTP_SERVER_H_
