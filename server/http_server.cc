#include "server/http_server.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "server/in_flight.h"
#include "server/logging.h"
#include "server/openai_api.h"
#include "server/status_util.h"

namespace jetserve {
namespace {

using nlohmann::json;

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                  "application/json");
}

void SendError(httplib::Response& res, const absl::Status& status) {
  SendJson(res, HttpStatusFor(status.code()), ErrorJson(status));
}

// An error the HTTP layer itself answers (unknown path, unreadable or oversized request), as an
// OpenAI error object. The message may quote the request (its path): any invalid UTF-8 in it
// is replaced, never thrown on.
void SendHttpError(httplib::Response& res, int status, const std::string& message) {
  SendJson(res, status,
           {{"error",
             {{"message", message},
              {"type", "invalid_request_error"},
              {"param", nullptr},
              {"code", status}}}});
}

std::string SseEvent(const json& data) {
  return absl::StrCat("data: ", data.dump(-1, ' ', false, json::error_handler_t::replace), "\n\n");
}

// One HTTP request's engine outputs, in arrival order. Filled by the engine's step thread
// (the sinks), drained by the request's handler.
struct OutputQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<size_t, RequestOutput>> items;  // (prompt index, output)
  size_t requests_finished = 0;

  OutputSink SinkFor(size_t prompt, std::shared_ptr<OutputQueue> self) {
    return [self = std::move(self), prompt](RequestOutput out) {
      std::lock_guard<std::mutex> lock(self->mu);
      if (out.request_finished) ++self->requests_finished;
      self->items.emplace_back(prompt, std::move(out));
      self->cv.notify_all();
    };
  }
};

// Checks every request before routing. Framing: a request with two Content-Length headers,
// or one with Transfer-Encoding as well, is refused (400, connection closed): a proxy in front
// could take its body to end elsewhere than we do (request smuggling). Then, with `keys`
// (null: none), refuses every request but GET /health without a valid `Authorization: Bearer
// KEY`: an unauthenticated client learns nothing, not even which paths exist.
void CheckBeforeRouting(httplib::Server& server, const ApiKeys* keys) {
  server.set_pre_routing_handler([keys](const httplib::Request& req, httplib::Response& res) {
    const size_t lengths = req.get_header_value_count("Content-Length");
    if (lengths > 1 || (lengths == 1 && req.has_header("Transfer-Encoding"))) {
      res.set_header("Connection", "close");
      SendError(res, absl::InvalidArgumentError(
                         "ambiguous request framing: several Content-Length headers, or "
                         "Content-Length with Transfer-Encoding"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (keys == nullptr) return httplib::Server::HandlerResponse::Unhandled;
    // Probes (Kubernetes, load balancers) carry no credentials.
    if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    // Exactly one header: with several, which one counts would be ambiguous.
    if (req.get_header_value_count("Authorization") == 1 &&
        keys->Authorizes(req.get_header_value("Authorization"))) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    // Neither the answer nor the log repeats what was sent: it may be a real key with a typo.
    LogEvent(spdlog::level::info, "unauthenticated request refused",
             {{"method", req.method},
              {"path", req.path},
              {"peer", absl::StrCat(req.remote_addr, ":", req.remote_port)}});
    res.set_header("WWW-Authenticate", "Bearer");
    SendJson(
        res, 401,
        {{"error",
          {{"message", "missing or invalid API key: send the header 'Authorization: Bearer KEY'"},
           {"type", "authentication_error"},
           {"param", nullptr},
           {"code", "invalid_api_key"}}}});
    return httplib::Server::HandlerResponse::Handled;
  });
}

}  // namespace

class HttpServer::Handlers {
 public:
  void SetEngine(Engine* engine, PrometheusMetrics* metrics, std::string model_name) {
    metrics_ = metrics;
    model_name_ = std::move(model_name);
    created_ = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    engine_.store(engine, std::memory_order_release);
  }

  void set_max_body_bytes(int64_t n) { max_body_bytes_ = n; }

  // Completions in flight, from submission until the response (a stream's last chunk
  // included) is written or abandoned: held by the handler and a stream's content provider.
  using InFlight = InFlightCounter::Token;
  InFlightCounter& in_flight() { return in_flight_; }

  void Register(httplib::Server& server) {
    server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      Engine* engine = engine_.load(std::memory_order_acquire);
      if (engine == nullptr) {
        SendJson(res, 503, {{"status", "loading"}});
      } else if (!engine->accepting()) {
        SendJson(res, 503, {{"status", "shutting down"}});
      } else {
        SendJson(res, 200, {{"status", "ok"}});
      }
    });
    server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      Engine* engine = Ready(res);
      if (engine == nullptr) return;
      SendJson(res, 200,
               {{"object", "list"},
                {"data",
                 {{{"id", model_name_},
                   {"object", "model"},
                   {"created", created_},
                   {"owned_by", "jetserve"},
                   {"max_model_len", engine->limits().max_model_len}}}}});
    });
    // The POST bodies are read by the handlers themselves (a ContentReader), whatever their
    // Content-Type, so that the size limit counts what is actually received: chunked bodies and
    // decompressed gzip or brotli bodies, which httplib's own limit (Content-Length) misses.
    for (const auto& [path, kind] : {std::pair{"/v1/completions", ApiKind::kCompletions},
                                     std::pair{"/v1/chat/completions", ApiKind::kChat}}) {
      server.Post(path, [this, kind = kind](const httplib::Request& req, httplib::Response& res,
                                            const httplib::ContentReader& reader) {
        std::optional<std::string> body = ReadBody(req, reader, res);
        if (body.has_value()) Complete(kind, req, *body, res);
      });
    }
    // Unknown paths and methods, unreadable requests: an OpenAI error object, not an empty body.
    server.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const int status = res.status;
      std::string message;
      if (status == 404) {
        message = "no such endpoint";
      } else if (status == 413) {
        message = TooLarge();
      } else if (status == 400) {
        message =
            "the request could not be read (malformed request line, headers, "
            "Content-Length or body encoding)";
      } else {
        message = absl::StrCat("HTTP status ", status);
      }
      SendHttpError(res, status, absl::StrCat(req.method, " ", req.path, ": ", message));
    });
    server.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown error";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          LogEvent(spdlog::level::err, "http handler failed", {{"error", what}});
          SendError(res, absl::InternalError("internal error"));
        });
  }

 private:
  // The engine, or null after answering 503 while the model loads.
  Engine* Ready(httplib::Response& res) {
    Engine* engine = engine_.load(std::memory_order_acquire);
    if (engine == nullptr) {
      SendError(res, absl::UnavailableError("the model is still loading; retry when /health "
                                            "answers 200"));
    }
    return engine;
  }

  std::string TooLarge() const {
    return absl::StrCat("the request body is larger than the limit of ", max_body_bytes_,
                        " bytes (the server's --max-request-bytes)");
  }

  // The whole body, decoded (chunks joined, gzip or brotli inflated), up to max_body_bytes_;
  // otherwise answers 413 (or 400 when it cannot be read) and returns nothing.
  std::optional<std::string> ReadBody(const httplib::Request& req,
                                      const httplib::ContentReader& reader,
                                      httplib::Response& res) {
    std::string body;
    bool too_large = false;
    const bool read = reader([&](const char* data, size_t n) {
      if (body.size() + n > static_cast<size_t>(max_body_bytes_)) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    // httplib checks a declared Content-Length against the same limit before reading.
    too_large =
        too_large || res.status == 413 ||
        req.get_header_value<uint64_t>("Content-Length") > static_cast<uint64_t>(max_body_bytes_);
    if (too_large || !read) {
      const int status = too_large ? 413 : 400;
      const std::string message =
          too_large ? TooLarge()
                    : "the request body could not be read (cut short, or a bad chunked or "
                      "compressed encoding)";
      if (metrics_ != nullptr) {
        metrics_->OnRequestRejected(too_large ? absl::StatusCode::kResourceExhausted
                                              : absl::StatusCode::kInvalidArgument);
      }
      LogEvent(spdlog::level::info, "request rejected",
               {{"status", status}, {"error", message}, {"path", req.path}});
      // The rest of the body is still in the socket: the connection cannot carry another request.
      res.set_header("Connection", "close");
      SendHttpError(res, status, absl::StrCat(req.method, " ", req.path, ": ", message));
      return std::nullopt;
    }
    return body;
  }

  void Reject(httplib::Response& res, const absl::Status& status) {
    if (metrics_ != nullptr) metrics_->OnRequestRejected(status.code());
    LogEvent(spdlog::level::info, "request rejected",
             {{"status", StatusCodeName(status.code())}, {"error", std::string(status.message())}});
    SendError(res, status);
  }

  void Complete(ApiKind kind, const httplib::Request& req, const std::string& body_text,
                httplib::Response& res);
  void Respond(Engine& engine, std::shared_ptr<OpenAiJob> job, std::shared_ptr<OutputQueue> queue,
               httplib::Response& res);
  void Stream(Engine& engine, std::shared_ptr<OpenAiJob> job, std::shared_ptr<OutputQueue> queue,
              InFlight in_flight, httplib::Response& res);

  std::atomic<Engine*> engine_{nullptr};
  PrometheusMetrics* metrics_ = nullptr;  // written before engine_ is published
  std::string model_name_;
  int64_t created_ = 0;
  int64_t max_body_bytes_ = 0;  // set before the server starts
  InFlightCounter in_flight_;
};

void HttpServer::Handlers::Complete(ApiKind kind, const httplib::Request& req,
                                    const std::string& body_text, httplib::Response& res) {
  Engine* engine = Ready(res);
  if (engine == nullptr) return;
  // No request needs deep nesting; refusing it keeps every later walk of the value shallow.
  constexpr int kMaxDepth = 64;
  bool too_deep = false;
  json body = json::parse(
      body_text,
      [&](int depth, json::parse_event_t, json&) {
        too_deep = too_deep || depth > kMaxDepth;
        return true;
      },
      /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    Reject(res, absl::InvalidArgumentError("the request body is not valid JSON"));
    return;
  }
  if (too_deep) {
    Reject(res, absl::InvalidArgumentError(
                    absl::StrCat("the request body nests more than ", kMaxDepth, " levels deep")));
    return;
  }
  absl::StatusOr<OpenAiJob> parsed =
      ParseOpenAiRequest(kind, body, model_name_, engine->limits(), engine->config().vocab_size);
  if (!parsed.ok()) {
    Reject(res, parsed.status());
    return;
  }
  auto job = std::make_shared<OpenAiJob>(*std::move(parsed));
  InFlight in_flight = in_flight_.Track();  // shutdown waits for it (HttpServer::Drain)
  // Cancels carry the job's owner tag: a client that reuses an id after its request ended is
  // not reached by this one's late cancel.
  const uint64_t owner = Engine::NewOwner();
  for (EngineRequest& r : job->requests) r.owner = owner;
  auto queue = std::make_shared<OutputQueue>();
  // Submit every prompt; if one is refused, cancel those already accepted.
  for (size_t i = 0; i < job->requests.size(); ++i) {
    absl::StatusOr<std::string> id = engine->Submit(job->requests[i], queue->SinkFor(i, queue));
    if (!id.ok()) {
      for (size_t j = 0; j < i; ++j) engine->Cancel(job->requests[j].request_id, owner);
      Reject(res, job->requests.size() == 1
                      ? id.status()
                      : absl::Status(id.status().code(),
                                     absl::StrCat("prompt[", i, "]: ", id.status().message())));
      return;
    }
  }
  LogEvent(spdlog::level::debug, "request received",
           {{"request_id", job->id},
            {"api", kind == ApiKind::kChat ? "chat" : "completions"},
            {"prompts", job->requests.size()},
            {"n", job->n},
            {"stream", job->stream},
            {"peer", absl::StrCat(req.remote_addr, ":", req.remote_port)}});
  if (job->stream) {
    Stream(*engine, std::move(job), std::move(queue), std::move(in_flight), res);
  } else {
    Respond(*engine, std::move(job), std::move(queue), res);
  }
}

void HttpServer::Handlers::Respond(Engine& engine, std::shared_ptr<OpenAiJob> job,
                                   std::shared_ptr<OutputQueue> queue, httplib::Response& res) {
  std::vector<ChoiceBuilder> choices;
  for (size_t i = 0; i < job->requests.size() * job->n; ++i)
    choices.emplace_back(*job, static_cast<int32_t>(i), engine.tokenizer());
  absl::Status failure;
  {
    std::unique_lock<std::mutex> lock(queue->mu);
    queue->cv.wait(lock, [&] { return queue->requests_finished == job->requests.size(); });
    for (auto& [prompt, out] : queue->items) {
      if (out.finished && !out.status.ok() && failure.ok()) failure = out.status;
      choices[prompt * job->n + out.index].Add(out);
    }
  }
  if (!failure.ok()) {
    LogEvent(spdlog::level::info, "request failed",
             {{"request_id", job->id},
              {"status", StatusCodeName(failure.code())},
              {"error", std::string(failure.message())}});
    SendError(res, failure);
    return;
  }
  json response = ResponseEnvelope(*job, model_name_, /*chunk=*/false);
  for (const ChoiceBuilder& choice : choices) response["choices"].push_back(choice.Final());
  response["usage"] = UsageJson(choices, job->n);
  SendJson(res, 200, response);
}

void HttpServer::Handlers::Stream(Engine& engine, std::shared_ptr<OpenAiJob> job,
                                  std::shared_ptr<OutputQueue> queue, InFlight in_flight,
                                  httplib::Response& res) {
  struct StreamState {
    std::vector<ChoiceBuilder> choices;
    std::set<size_t> started;
    bool error_sent = false;
    bool done = false;
  };
  auto state = std::make_shared<StreamState>();
  for (size_t i = 0; i < job->requests.size() * job->n; ++i)
    state->choices.emplace_back(*job, static_cast<int32_t>(i), engine.tokenizer());
  const std::string model_name = model_name_;
  Engine* engine_ptr = &engine;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, queue, state, model_name](size_t, httplib::DataSink& sink) -> bool {
        std::deque<std::pair<size_t, RequestOutput>> batch;
        bool all_done = false;
        {
          std::unique_lock<std::mutex> lock(queue->mu);
          // Wake up now and then to notice a client that went away while nothing was produced.
          queue->cv.wait_for(lock, std::chrono::seconds(1), [&] { return !queue->items.empty(); });
          batch.swap(queue->items);
          all_done = queue->requests_finished == job->requests.size();
        }
        if (batch.empty() && !all_done) return sink.is_writable();
        std::string out;
        for (auto& [prompt, output] : batch) {
          const size_t index = prompt * job->n + output.index;
          ChoiceBuilder& choice = state->choices[index];
          choice.Add(output);
          if (output.finished && !output.status.ok()) {
            // Cancelled (shutdown, deadline) or failed: one error event for the stream.
            if (!state->error_sent) {
              LogEvent(spdlog::level::info, "request failed",
                       {{"request_id", job->id},
                        {"status", StatusCodeName(output.status.code())},
                        {"error", std::string(output.status.message())}});
              out += SseEvent(ErrorJson(output.status));
            }
            state->error_sent = true;
            continue;
          }
          const bool first = state->started.insert(index).second;
          json chunk = ResponseEnvelope(*job, model_name, /*chunk=*/true);
          chunk["choices"].push_back(choice.Delta(output, first));
          out += SseEvent(chunk);
        }
        if (all_done) {
          if (job->include_usage && !state->error_sent) {
            json chunk = ResponseEnvelope(*job, model_name, /*chunk=*/true);
            chunk["usage"] = UsageJson(state->choices, job->n);
            out += SseEvent(chunk);
          }
          out += "data: [DONE]\n\n";
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (all_done) {
          state->done = true;
          sink.done();
        }
        return true;
      },
      [job, state, engine_ptr, in_flight](bool) {
        // The client left before the end: stop generating for it.
        if (!state->done) {
          for (const EngineRequest& r : job->requests) engine_ptr->Cancel(r.request_id, r.owner);
        }
      });
}

HttpServer::HttpServer() : handlers_(std::make_unique<Handlers>()) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<int> HttpServer::Start(const std::string& host, int port, int threads,
                                      int64_t max_body_bytes, const TlsConfig* tls,
                                      const ApiKeys* api_keys) {
  if (tls != nullptr) {
    auto ssl = std::make_unique<httplib::SSLServer>(
        [tls](SSL_CTX& ctx) { return ConfigureServerSslContext(*tls, &ctx); });
    if (!ssl->is_valid()) return absl::InternalError("cannot set up TLS for HTTP");
    server_ = std::move(ssl);
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  // cpp-httplib's default sets SO_REUSEPORT, which would let a second server bind a port in use
  // and silently share its traffic; a clash must be an error instead (as for gRPC).
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  CheckBeforeRouting(*server_, api_keys);
  handlers_->set_max_body_bytes(max_body_bytes);
  handlers_->Register(*server_);
  server_->set_payload_max_length(static_cast<size_t>(max_body_bytes));
  // Streams are many small writes (headers, then an event per output, then the last chunk).
  // With Nagle's algorithm a small write may wait for the ACK of the one before, up to a
  // client's delayed-ACK timeout (~40 ms on Linux): streaming servers turn it off (uvicorn,
  // nginx's tcp_nodelay), as gRPC does for its connections.
  server_->set_tcp_nodelay(true);
  // cpp-httplib gives up on a write after 5 s by default: a streaming client that paused that
  // long (a GC, a slow consumer) lost its stream. Its output waits meanwhile (the engine goes
  // on); a minute bounds what a stalled reader can hold.
  server_->set_write_timeout(60, 0);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  int bound = port;
  if (port == 0) {
    bound = server_->bind_to_any_port(host);
    if (bound < 0) bound = 0;
  } else if (!server_->bind_to_port(host, port)) {
    bound = 0;
  }
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat(host, ":", port, ": bind failed (address in use or not local?)"));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void HttpServer::SetEngine(Engine* engine, PrometheusMetrics* metrics, std::string model_name) {
  handlers_->SetEngine(engine, metrics, std::move(model_name));
}

bool HttpServer::Drain(std::chrono::steady_clock::time_point deadline) {
  return handlers_->in_flight().WaitIdle(deadline);
}

int64_t HttpServer::InFlight() const { return handlers_->in_flight().count(); }

void HttpServer::Stop() {
  if (server_ == nullptr || !thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace jetserve
