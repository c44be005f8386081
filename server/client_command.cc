// `jetserve client`: streams one completion from a running server to stdout. Also the smallest
// example of a jetserve.v1 client.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "jetserve/v1/jetserve.grpc.pb.h"
#include "server/api_keys.h"
#include "server/cli_args.h"
#include "server/commands.h"
#include "server/secret_file.h"
#include "server/status_util.h"

namespace jetserve {
namespace {

void AddClientFlags(CliArgs& args) {
  args.AddValue("addr", "server address, HOST:PORT", "127.0.0.1:50051");
  args.AddValue("prompt", "prompt text");
  args.AddValue("prompt-ids", "prompt as comma-separated token ids, e.g. 1,2,3");
  args.AddValue("max-tokens", "tokens to generate at most (server default: 16)");
  args.AddValue("temperature", "sampling temperature; 0 is greedy (server default: 1)");
  args.AddValue("top-p", "nucleus sampling probability mass (server default: 1, off)");
  args.AddValue("top-k", "sample among the k most likely tokens (server default: 0, off)");
  args.AddValue("seed", "random seed (server default: random)");
  args.AddValue("logprobs", "top log-probabilities per token (needs --json to be seen)");
  args.AddValue("stop", "a stop string");
  args.AddValue("stop-token-ids", "comma-separated token ids that end generation");
  args.AddValue("request-id", "the request's id (server default: generated)");
  args.AddValue("timeout", "deadline in seconds for the whole request");
  args.AddBool("ignore-eos", "keep generating past end-of-sequence tokens");
  args.AddBool("honor-special-tokens", "turn special-token text in --prompt into the tokens");
  args.AddBool("wait-for-ready", "wait for the server to come up instead of failing at once");
  args.AddBool("json", "print every response message as one JSON line instead of the text");
  args.AddBool("tls", "connect with TLS (implied by the other --tls flags)");
  args.AddValue("tls-ca",
                "PEM CA certificates that verify the server (default: the system's roots)");
  args.AddValue("tls-cert", "PEM client certificate chain, for servers that require one");
  args.AddValue("tls-key", "PEM private key of --tls-cert");
  args.AddValue("api-key-file",
                "file whose first key is sent as 'authorization: Bearer KEY' "
                "(default: $JETSERVE_API_KEY, if set)");
}

// The channel credentials the flags ask for: plaintext, or TLS with an optional CA and client
// certificate.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(const CliArgs& args) {
  if (args.Has("tls-cert") != args.Has("tls-key")) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both");
  }
  if (!args.GetBool("tls") && !args.Has("tls-ca") && !args.Has("tls-cert")) {
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  for (auto [flag, out] : {std::pair{"tls-ca", &options.pem_root_certs},
                           std::pair{"tls-cert", &options.pem_cert_chain},
                           std::pair{"tls-key", &options.pem_private_key}}) {
    if (!args.Has(flag)) continue;
    absl::StatusOr<std::string> pem = ReadSecretFile(flag, args.Get(flag));
    if (!pem.ok()) return pem.status();
    *out = *std::move(pem);
  }
  return grpc::SslCredentials(options);
}

// The key to send: the first of --api-key-file, else $JETSERVE_API_KEY; empty: none.
absl::StatusOr<std::string> ApiKey(const CliArgs& args) {
  std::string text;
  std::string what;
  if (args.Has("api-key-file")) {
    absl::StatusOr<std::string> file = ReadSecretFile("api-key-file", args.Get("api-key-file"));
    if (!file.ok()) return file.status();
    text = *std::move(file);
    what = absl::StrCat("--api-key-file: ", args.Get("api-key-file"));
  } else if (const char* env = std::getenv(kApiKeyEnvVar); env != nullptr) {
    text = env;
    what = kApiKeyEnvVar;
  } else {
    return std::string();
  }
  absl::StatusOr<std::vector<std::string>> keys = ParseApiKeys(text, what);
  if (!keys.ok()) return keys.status();
  if (keys->empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no key"));
  return keys->front();
}

// Fills `request` from the flags; errors name the flag.
absl::Status BuildRequest(const CliArgs& args, v1::GenerateRequest* request) {
  if (args.Has("prompt") == args.Has("prompt-ids")) {
    return absl::InvalidArgumentError("give exactly one of --prompt and --prompt-ids");
  }
  if (args.Has("prompt")) {
    request->set_text(args.Get("prompt"));
  } else {
    auto ids = args.GetIntList("prompt-ids");
    if (!ids.ok()) return ids.status();
    request->mutable_token_ids()->mutable_ids()->Add(ids->begin(), ids->end());
  }
  request->set_request_id(args.Get("request-id"));
  request->set_honor_special_tokens(args.GetBool("honor-special-tokens"));
  v1::SamplingParams* p = request->mutable_sampling();
  // Unset flags stay unset in the request, so the server's defaults apply.
  if (args.Has("max-tokens")) {
    auto v = args.GetInt("max-tokens", INT32_MIN, INT32_MAX);
    if (!v.ok()) return v.status();
    p->set_max_tokens(static_cast<int32_t>(*v));
  }
  if (args.Has("temperature")) {
    auto v = args.GetDouble("temperature");
    if (!v.ok()) return v.status();
    p->set_temperature(static_cast<float>(*v));
  }
  if (args.Has("top-p")) {
    auto v = args.GetDouble("top-p");
    if (!v.ok()) return v.status();
    p->set_top_p(static_cast<float>(*v));
  }
  if (args.Has("top-k")) {
    auto v = args.GetInt("top-k", INT32_MIN, INT32_MAX);
    if (!v.ok()) return v.status();
    p->set_top_k(static_cast<int32_t>(*v));
  }
  if (args.Has("seed")) {
    auto v = args.GetInt("seed", 0, INT64_MAX);
    if (!v.ok()) return v.status();
    p->set_seed(static_cast<uint64_t>(*v));
  }
  if (args.Has("logprobs")) {
    auto v = args.GetInt("logprobs", INT32_MIN, INT32_MAX);
    if (!v.ok()) return v.status();
    p->set_logprobs(static_cast<int32_t>(*v));
  }
  if (args.Has("stop")) p->add_stop(args.Get("stop"));
  if (args.Has("stop-token-ids")) {
    auto ids = args.GetIntList("stop-token-ids");
    if (!ids.ok()) return ids.status();
    p->mutable_stop_token_ids()->Add(ids->begin(), ids->end());
  }
  p->set_ignore_eos(args.GetBool("ignore-eos"));
  return absl::OkStatus();
}

std::string FinishReasonText(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    case v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return "unspecified";
  }
}

}  // namespace

int RunClient(int argc, char** argv) {
  CliArgs args;
  AddClientFlags(args);
  for (int i = 2; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::cout << "usage: jetserve client [--addr HOST:PORT] (--prompt TEXT | --prompt-ids 1,2,3)"
                   " [--max-tokens N] [--temperature T] [--seed S] [--timeout SECONDS] ...\n"
                << "streams a completion to stdout; finish reason and usage go to stderr\n\n"
                << "flags:\n"
                << args.Usage();
      return 0;
    }
  }
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok())
    return ReportUsageError("client", s, args);
  v1::GenerateRequest request;
  if (absl::Status s = BuildRequest(args, &request); !s.ok())
    return ReportUsageError("client", s, args);

  grpc::ClientContext context;
  if (args.Has("timeout")) {
    auto seconds = args.GetDouble("timeout");
    if (!seconds.ok()) return ReportUsageError("client", seconds.status(), args);
    if (*seconds <= 0) {
      return ReportUsageError("client",
                              absl::InvalidArgumentError("--timeout: must be > 0 seconds"), args);
    }
    context.set_deadline(DeadlineAfter(*seconds));
  }
  context.set_wait_for_ready(args.GetBool("wait-for-ready"));
  const bool json = args.GetBool("json");
  absl::StatusOr<std::string> api_key = ApiKey(args);
  if (!api_key.ok()) return ReportUsageError("client", api_key.status(), args);
  if (!api_key->empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", *api_key));
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = ChannelCredentials(args);
  if (!credentials.ok()) return ReportUsageError("client", credentials.status(), args);

  auto channel = grpc::CreateChannel(args.Get("addr"), *credentials);
  std::unique_ptr<v1::JetServe::Stub> stub = v1::JetServe::NewStub(channel);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub->Generate(&context, request);
  v1::GenerateResponse response;
  v1::GenerateResponse last;
  bool any_text = false;
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.preserve_proto_field_names = true;
  while (reader->Read(&response)) {
    if (json) {
      std::string line;
      (void)google::protobuf::util::MessageToJsonString(response, &line, json_options);
      std::cout << line << "\n" << std::flush;
    } else if (!response.text().empty()) {
      std::cout << response.text() << std::flush;
      any_text = true;
    }
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = response;
  }
  const grpc::Status status = reader->Finish();
  if (any_text) std::cout << "\n" << std::flush;
  if (last.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    std::cerr << "request_id=" << last.request_id()
              << " finish_reason=" << FinishReasonText(last.finish_reason());
    if (!last.stop_reason().empty()) std::cerr << " stop_reason=" << last.stop_reason();
    std::cerr << " prompt_tokens=" << last.usage().prompt_tokens()
              << " completion_tokens=" << last.usage().completion_tokens() << "\n";
  }
  if (!status.ok()) {
    std::cerr << "jetserve client: " << StatusCodeName(status.error_code()) << ": "
              << status.error_message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace jetserve
