// The Generate RPC for one request: submits it to the engine and streams the engine's outputs
// back with gRPC's callback API, one write in flight at a time.
//
// Threads: outputs arrive on the engine's step thread (through the OutputSink), write
// completions and cancellation on gRPC's threads. The step thread only queues an output: the
// write it may start runs on a TaskQueue's thread (task_queue.h), never on the step thread. The
// state they share lives in a Stream object held by both the reactor and the sink, because the
// engine may still call the sink after the RPC is over and the reactor deleted (e.g. the final
// "cancelled" output after a client left).
#ifndef JETSERVE_SERVER_GENERATE_REACTOR_H_
#define JETSERVE_SERVER_GENERATE_REACTOR_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "jetserve/v1/jetserve.pb.h"
#include "server/in_flight.h"
#include "server/prometheus_metrics.h"
#include "server/task_queue.h"

namespace jetserve {

class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // Validates and submits the request; on failure the RPC finishes at once with that status.
  // A non-OK `refusal` (e.g. UNAUTHENTICATED) finishes it at once with that status instead.
  // `engine` is null while the model is loading (UNAVAILABLE). `metrics` may be null.
  // `writes` runs the writes the engine's outputs start; it must outlive the engine's use of
  // the request (the service's). A client that reads too slowly has its output buffered up to
  // `max_pending_bytes`; past that the request is stopped, and once what was buffered is read
  // the RPC ends RESOURCE_EXHAUSTED. Deletes itself when the RPC is done.
  static constexpr size_t kMaxMessageBytes = size_t{1} << 20;  // a message, about
  // `streams` counts the reactor until it is done (shutdown waits for it).
  static GenerateReactor* Start(Engine* engine, PrometheusMetrics* metrics, TaskQueue* writes,
                                size_t max_pending_bytes, InFlightCounter* streams,
                                grpc::CallbackServerContext* context,
                                const v1::GenerateRequest& request,
                                const absl::Status& refusal = absl::OkStatus());

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  struct Stream;
  enum class Action { kNone, kWrite, kFinish };

  GenerateReactor(Engine* engine, TaskQueue* writes, size_t max_pending_bytes, std::string peer);
  void Submit(const v1::GenerateRequest& request, grpc::CallbackServerContext* context,
              PrometheusMetrics* metrics, const absl::Status& refusal);
  // Called from the engine's step thread for each output of the request: merges it into the
  // pending messages and, when no write is in flight, posts a Pump to the stream's TaskQueue.
  static void OnOutput(const std::shared_ptr<Stream>& stream, RequestOutput output);
  // Starts the next write, or the Finish when it is due, on `reactor`. Decides under the
  // stream's lock and acts outside it: gRPC calls are never made holding our lock.
  static void Pump(const std::shared_ptr<Stream>& stream);

  std::shared_ptr<Stream> stream_;  // its `engine` is the reactor's too
  InFlightCounter::Token in_flight_;
};

}  // namespace jetserve

#endif  // JETSERVE_SERVER_GENERATE_REACTOR_H_
