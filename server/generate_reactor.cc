#include "server/generate_reactor.h"

#include <deque>
#include <map>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/logging.h"
#include "server/proto_convert.h"
#include "server/status_util.h"

namespace jetserve {

// What the reactor, the engine's sink and gRPC's reactions share. The decision of what to do
// next (write, finish, nothing) is taken under `mu`; the gRPC call is made after releasing it.
struct GenerateReactor::Stream {
  struct PendingMessage {
    v1::GenerateResponse message;
    size_t bytes = 0;   // AppendOutput's estimates: serialized
    size_t memory = 0;  // and held
  };

  // Set before the request is submitted, constant afterwards.
  Engine* engine = nullptr;  // null while the model loads
  size_t max_pending_bytes = 0;
  std::string request_id;
  uint64_t owner = 0;  // the submission's tag: cancels reach this request, not a later namesake
  std::string peer;
  const Tokenizer* tokenizer = nullptr;
  TaskQueue* writes = nullptr;
  std::chrono::steady_clock::time_point start;

  // std::mutex, not absl::Mutex: Debian's Abseil is not built with ThreadSanitizer, which could
  // not see the ordering it gives between the step thread and the write threads.
  std::mutex mu;
  // Null once OnDone has run. Before Finish is called OnDone cannot run, so a pointer taken
  // under `mu` while !finish_called stays valid for the StartWrite/Finish that follows.
  GenerateReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  bool submitted ABSL_GUARDED_BY(mu) = false;    // the engine knows the request
  bool engine_done ABSL_GUARDED_BY(mu) = false;  // the engine sent the final output
  bool cancelled ABSL_GUARDED_BY(mu) = false;    // client gone: cancel, deadline, failed write
  bool write_in_flight ABSL_GUARDED_BY(mu) = false;
  bool pump_posted ABSL_GUARDED_BY(mu) = false;  // a Pump waits in `writes`
  bool finish_called ABSL_GUARDED_BY(mu) = false;
  // Outputs not yet written, per choice (key: the choice's index): merged into messages of up
  // to about kMaxMessageBytes each, so that a reader who fell behind gets messages its gRPC
  // client accepts (4 MiB by default); their memory is counted in pending_bytes, which may not
  // pass max_pending_bytes (past it the request is stopped: `overflowed`).
  std::map<int32_t, std::deque<PendingMessage>> pending ABSL_GUARDED_BY(mu);
  size_t pending_bytes ABSL_GUARDED_BY(mu) = 0;
  bool overflowed ABSL_GUARDED_BY(mu) = false;
  int32_t next_index ABSL_GUARDED_BY(mu) = 0;
  std::optional<absl::Status> first_error ABSL_GUARDED_BY(mu);
  // The status to finish with once everything pending is written.
  std::optional<grpc::Status> final_status ABSL_GUARDED_BY(mu);
  // The message being written: filled under `mu` when a write starts, then owned by gRPC until
  // OnWriteDone (no other write can start meanwhile).
  v1::GenerateResponse in_flight;
};

GenerateReactor::GenerateReactor(Engine* engine, TaskQueue* writes, size_t max_pending_bytes,
                                 std::string peer)
    : stream_(std::make_shared<Stream>()) {
  stream_->engine = engine;
  stream_->max_pending_bytes = max_pending_bytes;
  stream_->peer = std::move(peer);
  stream_->writes = writes;
  stream_->start = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(stream_->mu);
  stream_->reactor = this;
}

GenerateReactor* GenerateReactor::Start(Engine* engine, PrometheusMetrics* metrics,
                                        TaskQueue* writes, size_t max_pending_bytes,
                                        InFlightCounter* streams,
                                        grpc::CallbackServerContext* context,
                                        const v1::GenerateRequest& request,
                                        const absl::Status& refusal) {
  auto* reactor = new GenerateReactor(engine, writes, max_pending_bytes, context->peer());
  reactor->in_flight_ = streams->Track();
  reactor->Submit(request, context, metrics, refusal);
  return reactor;
}

namespace {

// The client's deadline on the engine's clock; none when the client set none.
std::optional<std::chrono::steady_clock::time_point> EngineDeadline(
    const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  const auto now = std::chrono::system_clock::now();
  // gRPC reports "no deadline" as a time point at the end of time; anything a year out is
  // treated the same, which also keeps the conversion below from overflowing.
  if (deadline > now + std::chrono::hours(24 * 365)) return std::nullopt;
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(deadline - now);
}

// Clients ending their own requests is routine; the server cutting them short is not.
spdlog::level::level_enum FinishLogLevel(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDeadlineExceeded:
      return spdlog::level::info;
    case absl::StatusCode::kUnavailable:
      return spdlog::level::warn;
    default:
      return spdlog::level::err;
  }
}

}  // namespace

void GenerateReactor::Submit(const v1::GenerateRequest& request,
                             grpc::CallbackServerContext* context, PrometheusMetrics* metrics,
                             const absl::Status& refusal) {
  const std::shared_ptr<Stream>& s = stream_;
  absl::Status status;
  if (!refusal.ok()) {
    status = refusal;
  } else if (s->engine == nullptr) {
    status = absl::UnavailableError("the model is still loading; retry when health is SERVING");
  } else {
    absl::StatusOr<EngineRequest> converted =
        ToEngineRequest(request, s->engine->config().vocab_size, s->engine->limits());
    if (converted.ok()) {
      converted->deadline = EngineDeadline(*context);
      s->request_id = converted->request_id;
      s->owner = converted->owner = Engine::NewOwner();
      s->tokenizer = &s->engine->tokenizer();
      LogEvent(spdlog::level::debug, "request received",
               {{"request_id", converted->request_id},
                {"prompt_tokens", converted->prompt_ids.size()},
                {"prompt_chars", converted->prompt_text.size()},
                {"max_tokens", converted->max_tokens},
                {"temperature", converted->sampling.temperature},
                {"peer", s->peer}});
      // The sink holds the stream, not the reactor: it may run after the reactor is gone.
      absl::StatusOr<std::string> id = s->engine->Submit(
          *std::move(converted), [s](RequestOutput output) { OnOutput(s, std::move(output)); });
      status = id.status();
    } else {
      status = converted.status();
    }
  }
  if (!status.ok()) {
    if (metrics != nullptr) metrics->OnRequestRejected(status.code());
    LogEvent(
        status.code() == absl::StatusCode::kInternal ? spdlog::level::err : spdlog::level::info,
        "request rejected",
        {{"request_id", s->request_id.empty() ? request.request_id() : s->request_id},
         {"status", StatusCodeName(status.code())},
         {"error", std::string(status.message())},
         {"peer", s->peer}});
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->final_status = ToGrpcStatus(status);
    }
    Pump(s);
    return;
  }
  bool cancel_now = false;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->submitted = true;
    // A cancellation that arrived while Submit ran could not reach the engine yet.
    cancel_now = s->cancelled && !s->engine_done;
  }
  if (cancel_now) s->engine->Cancel(s->request_id, s->owner);
}

void GenerateReactor::OnOutput(const std::shared_ptr<Stream>& s, RequestOutput output) {
  if (output.request_finished) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - s->start).count();
    LogEvent(FinishLogLevel(output.status.code()), "request finished",
             {{"request_id", output.request_id},
              {"prompt_tokens", output.prompt_tokens},
              {"completion_tokens", output.completion_tokens},
              {"finish_reason", std::string(FinishReasonName(output.finish_reason))},
              {"status", StatusCodeName(output.status.code())},
              // The whole message stays here: clients get only a generic one for internal
              // errors (ToGrpcStatus).
              {"error", std::string(output.status.message())},
              {"latency_s", seconds},
              {"peer", s->peer}});
  }
  bool cancel_engine = false, post_pump = false;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    // The request's status: the first abnormal end of any choice, else OK.
    if (output.finished && !output.status.ok() && !s->first_error.has_value()) {
      s->first_error = output.status;
    }
    if (output.request_finished) {
      s->engine_done = true;
      s->final_status = ToGrpcStatus(s->first_error.value_or(absl::OkStatus()));
    }
    if (s->reactor == nullptr || s->finish_called || s->cancelled) return;  // nobody to tell
    // After an overflow, what the engine still sends (the rest of its step, then the
    // cancellation: bounded) is kept too, so that the client gets every token generated.
    {
      std::deque<Stream::PendingMessage>& queue = s->pending[output.index];
      if (queue.empty() || queue.back().bytes >= kMaxMessageBytes) queue.emplace_back();
      const AppendedBytes added = AppendOutput(output, *s->tokenizer, &queue.back().message);
      queue.back().bytes += added.wire;
      queue.back().memory += added.memory;
      s->pending_bytes += added.memory;
      if (s->pending_bytes > s->max_pending_bytes && !s->engine_done && !s->overflowed) {
        // The client is not reading: stop generating for it (its slot goes to others) rather
        // than buffer without bound. It still gets what was buffered, then this status.
        s->overflowed = true;
        cancel_engine = s->submitted;
        s->first_error = absl::ResourceExhaustedError(absl::StrCat(
            "the client read the stream too slowly: more than ", s->max_pending_bytes >> 20,
            " MiB of output (in memory) waited to be sent (serve --max-pending-output-mb), so "
            "generation stopped after ",
            output.completion_tokens, " tokens"));
      }
    }
    // A write in flight pumps again when it is done (OnWriteDone); one posted Pump suffices.
    if (!s->write_in_flight && !s->pump_posted) {
      s->pump_posted = true;
      post_pump = true;
    }
  }
  if (cancel_engine) {
    LogEvent(spdlog::level::warn, "stream buffer full: stopping the request",
             {{"request_id", s->request_id},
              {"max_pending_bytes", s->max_pending_bytes},
              {"peer", s->peer}});
    // On the step thread: Cancel only queues the id for the next step.
    s->engine->Cancel(s->request_id, s->owner);
  }
  if (post_pump) s->writes->Post([s] { Pump(s); });
}

void GenerateReactor::Pump(const std::shared_ptr<Stream>& s) {
  GenerateReactor* reactor = nullptr;
  Action action = Action::kNone;
  grpc::Status status;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->pump_posted = false;  // this is the posted Pump, or does its work first
    if (s->reactor == nullptr || s->finish_called || s->write_in_flight) return;
    reactor = s->reactor;
    if (s->cancelled) {
      // The client will not read it; the status is for gRPC's bookkeeping only.
      s->finish_called = true;
      action = Action::kFinish;
      status = grpc::Status(grpc::StatusCode::CANCELLED, "the request was cancelled");
    } else if (!s->pending.empty()) {
      // Round-robin over the choices, so a slow reader sees every choice progress.
      auto it = s->pending.lower_bound(s->next_index);
      if (it == s->pending.end()) it = s->pending.begin();
      s->next_index = it->first + 1;
      Stream::PendingMessage& next = it->second.front();
      s->in_flight = std::move(next.message);
      s->pending_bytes -= next.memory;
      it->second.pop_front();
      if (it->second.empty()) s->pending.erase(it);
      s->write_in_flight = true;
      action = Action::kWrite;
    } else if (s->final_status.has_value()) {
      s->finish_called = true;
      action = Action::kFinish;
      status = *s->final_status;
    }
  }
  switch (action) {
    case Action::kWrite:
      reactor->StartWrite(&s->in_flight);
      break;
    case Action::kFinish:
      reactor->Finish(status);
      break;
    case Action::kNone:
      break;
  }
}

void GenerateReactor::OnWriteDone(bool ok) {
  bool cancel_engine = false;
  {
    std::lock_guard<std::mutex> lock(stream_->mu);
    stream_->write_in_flight = false;
    if (!ok) {
      // The stream broke (client gone); OnCancel may or may not follow.
      stream_->cancelled = true;
      cancel_engine = stream_->submitted && !stream_->engine_done;
    }
  }
  if (cancel_engine) stream_->engine->Cancel(stream_->request_id, stream_->owner);
  Pump(stream_);
}

void GenerateReactor::OnCancel() {
  bool cancel_engine = false;
  {
    std::lock_guard<std::mutex> lock(stream_->mu);
    stream_->cancelled = true;
    // Before submission the id is not the engine's yet (and may be another request's: a
    // duplicate id is refused); Submit cancels once it returns.
    cancel_engine = stream_->submitted && !stream_->engine_done;
  }
  if (cancel_engine) stream_->engine->Cancel(stream_->request_id, stream_->owner);
  Pump(stream_);
}

void GenerateReactor::OnDone() {
  {
    std::lock_guard<std::mutex> lock(stream_->mu);
    stream_->reactor = nullptr;
  }
  delete this;
}

}  // namespace jetserve
