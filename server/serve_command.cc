// `jetserve serve`: the gRPC server. Start-up order matters to Kubernetes probes: the gRPC port
// opens first with health NOT_SERVING, the model loads, then health turns SERVING. On SIGTERM or
// SIGINT: health NOT_SERVING, the engine drains (or cancels after --shutdown-timeout), the gRPC
// server stops, exit 0.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/device.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "nlohmann/json.hpp"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "server/api_keys.h"
#include "server/cli_args.h"
#include "server/commands.h"
#include "server/http_server.h"
#include "server/jetserve_service.h"
#include "server/logging.h"
#include "server/model_location.h"
#include "server/prometheus_metrics.h"
#include "server/signals.h"
#include "server/tls_config.h"

namespace jetserve {
namespace {

constexpr char kServiceName[] = "jetserve.v1.JetServe";

struct ServeFlags {
  std::string model;
  std::string device = "cpu";
  std::string served_model_name;
  std::string host;
  int64_t port = 0;
  int64_t metrics_port = 0;  // -1: no metrics endpoint
  int64_t http_port = 0;     // -1: no OpenAI-compatible HTTP API
  int64_t http_threads = 0;
  int64_t max_request_bytes = 0;
  int64_t max_pending_output_mb = 0;
  int64_t max_concurrent_streams = 0;
  int64_t keepalive_seconds = 0;
  EngineOptions engine;
  std::chrono::milliseconds shutdown_timeout{0};
  std::string log_format;
  std::string log_level;
  std::unique_ptr<TlsConfig> tls;   // null: plaintext
  std::optional<ApiKeys> api_keys;  // none: no authentication
};

void AddServeFlags(CliArgs& args) {
  args.AddValue("model", "checkpoint directory (default: the embedded random-weight model)");
  args.AddValue("served-model-name",
                "model name in GetModelInfo and metric labels (default: the directory's name)");
  args.AddValue("host", "address to listen on (0.0.0.0 or :: for every interface)", "127.0.0.1");
  args.AddValue("port", "gRPC port; 0 picks a free one", "50051");
  args.AddValue("metrics-port", "Prometheus /metrics port; 0 picks a free one, -1 disables",
                "8000");
  args.AddValue("http-port",
                "OpenAI-compatible HTTP API port (/v1/completions, /v1/chat/completions, "
                "/v1/models, /health); 0 picks a free one, -1 disables",
                "8080");
  args.AddValue("http-threads",
                "HTTP worker threads: connections served at once (a request or stream holds "
                "one); 0: --max-seqs + --max-queue + 16, at most 1024, so that every request "
                "the engine would take gets a thread and one past its queue gets its 429",
                "0");
  args.AddValue("device",
                "where the model runs: cpu; cuda (a CUDA build and a GPU); or null (no "
                "computation, meaningless tokens: measures the server's own overhead)",
                "cpu");
  args.AddValue("max-seqs", "requests generating at once (state slots)", "32");
  args.AddValue("max-batch-tokens", "tokens per engine step (decodes + prefill chunks)", "512");
  args.AddValue("max-queue", "requests waiting to start; beyond, RESOURCE_EXHAUSTED", "256");
  args.AddValue("memory-gb", "memory for state slots, window rings and KV blocks, in GiB", "1");
  args.AddValue("page-size", "positions per KV block", "16");
  args.AddValue("max-model-len", "prompt + completion tokens at most; 0: the model's context", "0");
  args.AddValue("max-logprobs", "largest SamplingParams.logprobs accepted", "20");
  args.AddValue("max-n", "largest SamplingParams.n (parallel samples per request)", "16");
  args.AddValue("max-prompt-tokens", "longest prompt accepted; 0: max_model_len - 1", "0");
  args.AddValue("max-output-tokens", "largest max_tokens accepted; 0: max_model_len", "0");
  args.AddValue("max-stop-strings", "stop strings per request at most", "16");
  args.AddValue("max-stop-length", "bytes per stop string at most", "256");
  args.AddValue("max-request-bytes", "largest gRPC request message and HTTP request body, in bytes",
                "8388608");
  args.AddValue("max-pending-output-mb",
                "a gRPC stream's output buffered for a client that reads too slowly, in MiB; past "
                "it the request stops and ends RESOURCE_EXHAUSTED once the buffer is read",
                "16");
  args.AddValue("max-concurrent-streams", "gRPC streams in flight per client connection", "128");
  args.AddValue("keepalive-seconds",
                "ping idle gRPC connections this often (and drop them after 20 s without an "
                "answer); clients may ping at most every 10 s",
                "60");
  args.AddValue("test-fail-after-steps",
                "TEST ONLY: make every forward pass after N steps fail (0: never)", "0");
  args.AddValue("shutdown-timeout",
                "seconds in-flight requests get to finish after SIGTERM before they are cancelled",
                "30");
  args.AddValue("tls-cert",
                "PEM certificate chain (leaf first): serve TLS on the gRPC and HTTP ports; "
                "needs --tls-key");
  args.AddValue("tls-key", "PEM private key of --tls-cert (unencrypted)");
  args.AddValue("tls-client-ca",
                "PEM CA certificates: require client certificates signed by them (mutual TLS) "
                "on the gRPC and HTTP ports");
  args.AddValue("api-key-file",
                "file of API keys, one per line ('#' comments): gRPC and HTTP requests need "
                "'authorization: Bearer KEY' (health checks excepted); $JETSERVE_API_KEY adds "
                "one key");
  args.AddValue("log-format", "text or json", "text");
  args.AddValue("log-level", "trace, debug, info, warn, error, critical or off", "info");
}

absl::StatusOr<ServeFlags> ParseServeFlags(const CliArgs& args) {
  ServeFlags f;
  if (absl::Status s = CheckModelFlag(args); !s.ok()) return s;
  f.model = args.Get("model");
  f.served_model_name = args.Get("served-model-name");
  f.host = args.Get("host");
  if (f.host.empty()) return absl::InvalidArgumentError("--host is empty");
  f.device = args.Get("device");
  if (absl::Status s = CheckDeviceName(f.device); !s.ok()) return s;
  auto port = args.GetInt("port", 0, 65535);
  if (!port.ok()) return port.status();
  f.port = *port;
  auto metrics_port = args.GetInt("metrics-port", -1, 65535);
  if (!metrics_port.ok()) return metrics_port.status();
  f.metrics_port = *metrics_port;
  auto http_port = args.GetInt("http-port", -1, 65535);
  if (!http_port.ok()) return http_port.status();
  f.http_port = *http_port;
  auto http_threads = args.GetInt("http-threads", 0, 4096);
  if (!http_threads.ok()) return http_threads.status();
  f.http_threads = *http_threads;
  struct IntFlag {
    const char* name;
    int64_t min;
    int64_t max;
    int64_t* out;
  };
  int64_t max_logprobs = 0;
  int64_t max_n = 0;
  int64_t max_stop_strings = 0;
  int64_t max_stop_length = 0;
  int64_t shutdown_seconds = 0;
  for (const IntFlag& flag : {
           IntFlag{"max-seqs", 1, 1 << 20, &f.engine.max_seqs},
           IntFlag{"max-batch-tokens", 1, 1 << 24, &f.engine.max_batch_tokens},
           IntFlag{"max-queue", 0, 1 << 24, &f.engine.max_queue},
           IntFlag{"page-size", 1, 1 << 16, &f.engine.page_size},
           IntFlag{"max-model-len", 0, 1 << 30, &f.engine.max_model_len},
           IntFlag{"max-logprobs", 0, 1 << 20, &max_logprobs},
           IntFlag{"max-n", 1, 1024, &max_n},
           IntFlag{"max-prompt-tokens", 0, 1 << 30, &f.engine.max_prompt_tokens},
           IntFlag{"max-output-tokens", 0, 1 << 30, &f.engine.max_output_tokens},
           IntFlag{"max-stop-strings", 0, 1 << 16, &max_stop_strings},
           IntFlag{"max-stop-length", 1, 1 << 20, &max_stop_length},
           IntFlag{"max-request-bytes", 1024, int64_t{1} << 30, &f.max_request_bytes},
           IntFlag{"max-pending-output-mb", 1, 1 << 16, &f.max_pending_output_mb},
           IntFlag{"max-concurrent-streams", 1, 1 << 20, &f.max_concurrent_streams},
           IntFlag{"keepalive-seconds", 1, 24 * 3600, &f.keepalive_seconds},
           IntFlag{"test-fail-after-steps", 0, int64_t{1} << 40,
                   &f.engine.fail_forward_after_steps},
           IntFlag{"shutdown-timeout", 0, 24 * 3600, &shutdown_seconds},
       }) {
    auto v = args.GetInt(flag.name, flag.min, flag.max);
    if (!v.ok()) return v.status();
    *flag.out = *v;
  }
  if (f.http_threads == 0) {
    f.http_threads = std::min<int64_t>(f.engine.max_seqs + f.engine.max_queue + 16, 1024);
  }
  f.engine.max_logprobs = static_cast<int32_t>(max_logprobs);
  f.engine.max_n = static_cast<int32_t>(max_n);
  f.engine.max_stop_strings = static_cast<int32_t>(max_stop_strings);
  f.engine.max_stop_length = static_cast<int32_t>(max_stop_length);
  f.shutdown_timeout = std::chrono::seconds(shutdown_seconds);
  auto memory_gb = args.GetDouble("memory-gb");
  if (!memory_gb.ok()) return memory_gb.status();
  if (*memory_gb <= 0 || *memory_gb > 1 << 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory-gb: ", *memory_gb, " is outside (0, 1048576]"));
  }
  f.engine.memory_bytes = static_cast<int64_t>(std::llround(*memory_gb * (int64_t{1} << 30)));
  f.log_format = args.Get("log-format");
  f.log_level = args.Get("log-level");
  // Read and checked here, before anything listens: a bad file is a flag error, not a failure
  // on the first connection.
  absl::StatusOr<std::unique_ptr<TlsConfig>> tls =
      LoadTlsConfig({.cert = args.Get("tls-cert"),
                     .key = args.Get("tls-key"),
                     .client_ca = args.Get("tls-client-ca")});
  if (!tls.ok()) return tls.status();
  f.tls = *std::move(tls);
  const char* env_key = std::getenv(kApiKeyEnvVar);
  if (args.Has("api-key-file") || env_key != nullptr) {
    absl::StatusOr<ApiKeys> keys = ApiKeys::Load(args.Get("api-key-file"), env_key);
    if (!keys.ok()) return keys.status();
    f.api_keys = *std::move(keys);
  }
  return f;
}

// "host:port", with IPv6 literals bracketed.
std::string HostPort(const std::string& host, int64_t port) {
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

void SetServing(grpc::Server& server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  health->SetServingStatus(serving);  // the overall status, service ""
  health->SetServingStatus(kServiceName, serving);
}

// The model's name as vLLM reports it: the flag, else the checkpoint directory's base name.
std::string ModelName(const std::string& flag, const std::string& dir) {
  if (!flag.empty()) return flag;
  std::filesystem::path p(dir);
  if (!p.has_filename()) p = p.parent_path();  // "dir/" -> "dir"
  return p.filename().string();
}

struct LoadedEngine {
  std::unique_ptr<PrometheusMetrics> metrics;  // outlives the engine, which reports to it
  std::unique_ptr<Engine> engine;
};

absl::StatusOr<LoadedEngine> LoadEngine(const ServeFlags& flags, prometheus::Registry* registry,
                                        const std::string& dir, const std::string& model_name) {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(dir);
  if (!model.ok()) return model.status();
  if (absl::Status s = UseDevice(**model, flags.device); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadCheckpointTokenizer(dir, (*model)->config());
  if (!tokenizer.ok()) return tokenizer.status();
  LoadedEngine out;
  if (registry != nullptr) {
    const int64_t max_len = flags.engine.max_model_len > 0
                                ? flags.engine.max_model_len
                                : (*model)->config().max_position_embeddings;
    out.metrics = std::make_unique<PrometheusMetrics>(*registry, model_name, max_len);
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(*std::move(model), *std::move(tokenizer), flags.engine, out.metrics.get());
  if (!engine.ok()) return engine.status();
  out.engine = *std::move(engine);
  return out;
}

// The machine-readable lines on stdout (logs go to stderr).
void PrintEvent(const nlohmann::json& event) { std::cout << event.dump() << std::endl; }

nlohmann::json PoolsJson(const EngineStats& stats) {
  nlohmann::json pools = nlohmann::json::object();
  for (const PoolStats& p : stats.pools) pools[p.name] = {{"used", p.used}, {"total", p.total}};
  return pools;
}

}  // namespace

int RunServe(int argc, char** argv) {
  CliArgs args;
  AddServeFlags(args);
  for (int i = 2; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::cout << "usage: jetserve serve [--model DIR] [--host H] [--port P] ...\n"
                << "serves jetserve.v1.JetServe, grpc.health.v1.Health and reflection over gRPC,"
                << " the OpenAI-compatible API and Prometheus metrics over HTTP\n"
                << "TLS and API keys: see docs/security.md\n\nflags:\n"
                << args.Usage();
      return 0;
    }
  }
  absl::StatusOr<ServeFlags> flags = [&]() -> absl::StatusOr<ServeFlags> {
    if (absl::Status s = args.Parse(argc, argv, 2); !s.ok()) return s;
    return ParseServeFlags(args);
  }();
  if (!flags.ok()) {
    std::cerr << "jetserve serve: " << flags.status().message() << "\n\nflags:\n" << args.Usage();
    return 2;
  }
  // Before any thread starts (the logger's included), so that every thread inherits the mask.
  BlockShutdownSignals();
  if (absl::Status s = InitLogging(flags->log_format, flags->log_level); !s.ok()) {
    std::cerr << "jetserve serve: " << s.message() << "\n";
    return 2;
  }
  auto fail = [](const std::string& what, const absl::Status& s) {
    LogEvent(spdlog::level::critical, what, {{"error", std::string(s.message())}});
    ShutdownLogging();
    return 1;
  };

  // Metrics endpoint and gRPC port first, so that scrapers and health probes get answers (not
  // connection errors) while the model loads.
  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<prometheus::Exposer> exposer;
  int metrics_port = -1;
  if (flags->metrics_port >= 0) {
    registry = std::make_shared<prometheus::Registry>();
    try {
      exposer = std::make_unique<prometheus::Exposer>(HostPort(flags->host, flags->metrics_port));
    } catch (const std::exception& e) {
      return fail("cannot listen for metrics",
                  absl::UnavailableError(
                      absl::StrCat(HostPort(flags->host, flags->metrics_port), ": ", e.what())));
    }
    exposer->RegisterCollectable(registry);
    const std::vector<int> ports = exposer->GetListeningPorts();
    metrics_port = ports.empty() ? -1 : ports.front();
  }

  std::unique_ptr<HttpServer> http;
  int http_port = -1;
  if (flags->http_port >= 0) {
    http = std::make_unique<HttpServer>();
    absl::StatusOr<int> port =
        http->Start(flags->host, static_cast<int>(flags->http_port),
                    static_cast<int>(flags->http_threads), flags->max_request_bytes,
                    flags->tls.get(), flags->api_keys.has_value() ? &*flags->api_keys : nullptr);
    if (!port.ok()) return fail("cannot listen for HTTP", port.status());
    http_port = *port;
  }

  JetServeService service(flags->device, flags->api_keys.has_value() ? &*flags->api_keys : nullptr,
                          static_cast<size_t>(flags->max_pending_output_mb) << 20);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, which would let a second server bind a port in use and
  // silently share its traffic; a clash must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(flags->max_request_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             static_cast<int>(flags->max_concurrent_streams));
  // Keepalive: find dead peers of idle connections, and refuse clients that ping abusively.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(flags->keepalive_seconds * 1000));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  int grpc_port = 0;
  builder.AddListeningPort(HostPort(flags->host, flags->port),
                           GrpcServerCredentials(flags->tls.get()), &grpc_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    if (http != nullptr) http->Stop();
    return fail("cannot listen for gRPC", absl::UnavailableError(absl::StrCat(
                                              HostPort(flags->host, flags->port),
                                              ": bind failed (address in use or not local?)")));
  }
  // The default health service starts out SERVING; say otherwise until the model is loaded.
  // (The port opened a moment ago; a probe in between would be answered SERVING, which no
  // orchestrator's first probe is fast enough to see.)
  SetServing(*server, false);
  const char* tls_mode =
      flags->tls == nullptr ? "off" : (flags->tls->mutual() ? "mutual" : "server");
  const int64_t api_keys = flags->api_keys.has_value() ? flags->api_keys->size() : 0;
  PrintEvent({{"event", "listening"},
              {"grpc_port", grpc_port},
              {"metrics_port", metrics_port},
              {"http_port", http_port},
              {"host", flags->host},
              {"tls", tls_mode},
              {"api_keys", api_keys}});
  LogEvent(spdlog::level::info, "listening",
           {{"grpc", HostPort(flags->host, grpc_port)},
            {"metrics_port", metrics_port},
            {"http_port", http_port},
            {"http_threads", http_port >= 0 ? flags->http_threads : 0},
            {"tls", tls_mode},
            {"api_keys", api_keys}});

  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> dir = ResolveModelDir(flags->model);  // may build the default
  if (!dir.ok()) {
    server->Shutdown(std::chrono::system_clock::now());
    return fail("cannot prepare the model", dir.status());
  }
  const std::string model_name = ModelName(flags->served_model_name, *dir);
  std::shared_ptr<EngineStatsCollector> collector;
  if (exposer != nullptr) {
    collector = std::make_shared<EngineStatsCollector>(model_name);
    exposer->RegisterCollectable(collector);
  }
  LogEvent(spdlog::level::info, "loading", {{"model_dir", *dir}, {"model_name", model_name}});
  // A failed engine cannot serve again: drain like a SIGTERM (health turns NOT_SERVING), then
  // exit non-zero so that the supervisor restarts the process.
  static std::atomic<bool> engine_failed{false};
  flags->engine.on_fatal_error = [](const absl::Status& status) {
    LogEvent(spdlog::level::critical, "engine failed; shutting down for a restart",
             {{"error", std::string(status.message())}});
    engine_failed = true;
    kill(getpid(), SIGTERM);  // wakes the main thread's sigwait
  };
  absl::StatusOr<LoadedEngine> loaded = LoadEngine(*flags, registry.get(), *dir, model_name);
  if (!loaded.ok()) {
    server->Shutdown(std::chrono::system_clock::now());
    return fail("cannot load the model", loaded.status());
  }
  Engine& engine = *loaded->engine;
  if (const ChatTemplate* chat = engine.chat_template(); chat == nullptr) {
    LogEvent(spdlog::level::warn,
             "no chat template: the tokenizer has no ChatML tokens; chat "
             "requests will be refused");
  } else {
    LogEvent(chat->is_fallback() ? spdlog::level::warn : spdlog::level::info, "chat template",
             {{"template", chat->Describe()}});
  }
  service.SetEngine(&engine, loaded->metrics.get(), model_name);
  if (http != nullptr) http->SetEngine(&engine, loaded->metrics.get(), model_name);
  if (collector != nullptr) collector->SetEngine(&engine);

  std::optional<int> sig = PollShutdownSignal();  // a SIGTERM during the load
  if (!sig.has_value()) {
    SetServing(*server, true);
    const EngineLimits limits = engine.limits();
    LogEvent(
        spdlog::level::info, "serving",
        {{"model_name", model_name},
         {"load_s",
          std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count()},
         {"max_model_len", limits.max_model_len},
         {"max_seqs", limits.max_seqs},
         {"max_batch_tokens", limits.max_batch_tokens},
         {"max_queue", limits.max_queue},
         {"pools", PoolsJson(engine.Stats())}});
    PrintEvent({{"event", "serving"}, {"model_name", model_name}});
    sig = WaitForShutdownSignal();
  }
  ExitOnNextShutdownSignal();

  // Drain. New requests are refused before health turns NOT_SERVING, so a client that sees
  // NOT_SERVING can rely on being refused; in-flight work goes on.
  const auto shutdown_start = std::chrono::steady_clock::now();
  engine.StopAccepting();
  server->GetHealthCheckService()->Shutdown();  // NOT_SERVING for every service, for good
  const EngineStats at_signal = engine.Stats();
  LogEvent(spdlog::level::info, "shutting down",
           {{"signal", *sig},
            {"running", at_signal.num_running},
            {"waiting", at_signal.num_waiting},
            {"grace_s", flags->shutdown_timeout.count() / 1000.0}});
  engine.Shutdown(flags->shutdown_timeout);
  // The engine has sent every request its final output; give the streams what is left of the
  // grace period (at least a second) to write it: the HTTP completions and the Generate
  // streams, counted by their servers. Only then are the servers shut down, with what is left
  // cut off: waiting in gRPC's own Shutdown would also wait out streams that never end by
  // themselves (a client's health Watch), and stopping the HTTP server cuts off its streams.
  const auto write_deadline = std::max(
      std::chrono::steady_clock::now() + std::chrono::seconds(1),
      shutdown_start +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(flags->shutdown_timeout));
  LogEvent(spdlog::level::info, "draining streams",
           {{"http_in_flight", http == nullptr ? 0 : http->InFlight()},
            {"grpc_streams", service.LiveStreams()}});
  const bool http_drained = http == nullptr || http->Drain(write_deadline);
  const bool grpc_drained = service.DrainStreams(write_deadline);
  if (!http_drained || !grpc_drained) {
    LogEvent(spdlog::level::warn, "grace period over: cutting off the streams still writing",
             {{"http_drained", http_drained}, {"grpc_drained", grpc_drained}});
  }
  // A moment for unary calls in flight (Tokenize, GetModelInfo); a Watch is cancelled after it.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  server->Wait();
  if (http != nullptr) http->Stop();
  const EngineStats final_stats = engine.Stats();
  LogEvent(
      spdlog::level::info, "stopped",
      {{"running", final_stats.num_running},
       {"waiting", final_stats.num_waiting},
       {"pools", PoolsJson(final_stats)},
       {"shutdown_s",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - shutdown_start).count()}});
  // Stop scrapes before the engine they read goes away.
  exposer.reset();
  LogEvent(spdlog::level::debug, "metrics endpoint closed");
  server.reset();
  loaded->engine.reset();
  LogEvent(spdlog::level::debug, "engine destroyed");
  ShutdownLogging();
  return engine_failed ? 1 : 0;
}

}  // namespace jetserve
