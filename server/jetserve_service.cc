#include "server/jetserve_service.h"

#include <algorithm>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/generate_reactor.h"
#include "server/logging.h"
#include "server/proto_convert.h"
#include "server/status_util.h"

namespace jetserve {
namespace {

const grpc::Status kLoading(grpc::StatusCode::UNAVAILABLE,
                            "the model is still loading; retry when health is SERVING");

// Unary RPCs do their (short, CPU-only) work on the callback thread and finish at once.
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace

absl::Status JetServeService::Authenticate(const grpc::CallbackServerContext& context,
                                           std::string_view method) const {
  if (api_keys_ == nullptr) return absl::OkStatus();
  const auto [begin, end] = context.client_metadata().equal_range("authorization");
  // Exactly one header: with several, which one counts would be ambiguous.
  if (begin != end && std::next(begin) == end &&
      api_keys_->Authorizes(std::string_view(begin->second.data(), begin->second.size()))) {
    return absl::OkStatus();
  }
  // Neither the message nor the log repeats what was sent: it may be a real key with a typo.
  LogEvent(spdlog::level::info, "unauthenticated call refused",
           {{"method", std::string(method)}, {"peer", context.peer()}});
  return absl::UnauthenticatedError(
      "missing or invalid API key: send the metadata 'authorization: Bearer KEY'");
}

namespace {

// Threads for the streams' writes: the engine's step thread no longer makes them, and a few
// threads keep up with it on a machine with the cores to spare (one on a small one).
int WriteThreads() {
  return std::clamp(static_cast<int>(std::thread::hardware_concurrency()) / 4, 1, 4);
}

constexpr size_t kMaxTokenizeIds = size_t{1} << 20;

}  // namespace

JetServeService::JetServeService(std::string device, const ApiKeys* api_keys,
                                 size_t max_pending_output_bytes)
    : device_(std::move(device)),
      api_keys_(api_keys),
      max_pending_output_bytes_(max_pending_output_bytes),
      writes_(WriteThreads()) {}

void JetServeService::SetEngine(Engine* engine, PrometheusMetrics* metrics,
                                std::string model_name) {
  metrics_ = metrics;
  model_name_ = std::move(model_name);
  engine_.store(engine, std::memory_order_release);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* JetServeService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  Engine* engine = engine_.load(std::memory_order_acquire);
  return GenerateReactor::Start(engine, engine == nullptr ? nullptr : metrics_, &writes_,
                                max_pending_output_bytes_, &streams_, context, *request,
                                Authenticate(*context, "Generate"));
}

grpc::ServerUnaryReactor* JetServeService::Tokenize(grpc::CallbackServerContext* context,
                                                    const v1::TokenizeRequest* request,
                                                    v1::TokenizeResponse* response) {
  if (absl::Status s = Authenticate(*context, "Tokenize"); !s.ok()) {
    return FinishNow(context, ToGrpcStatus(s));
  }
  const Engine* engine = engine_.load(std::memory_order_acquire);
  if (engine == nullptr) return FinishNow(context, kLoading);
  absl::StatusOr<std::vector<int32_t>> ids;
  if (request->has_messages()) {
    // The prompt Generate would build for this conversation.
    absl::StatusOr<std::vector<ChatMessage>> messages = ToChatMessages(request->messages());
    const ChatTemplate* chat = engine->chat_template();
    if (chat == nullptr) {
      return FinishNow(
          context,
          ToGrpcStatus(absl::FailedPreconditionError("messages: this model has no chat template")));
    }
    ids = messages.ok() ? chat->Apply(*messages, request->messages().has_add_generation_prompt()
                                                     ? request->messages().add_generation_prompt()
                                                     : true)
                        : messages.status();
    if (!ids.ok()) return FinishNow(context, ToGrpcStatus(ids.status()));
  } else {
    ids = engine->tokenizer().Encode(request->text(), request->honor_special_tokens());
    if (!ids.ok()) {
      return FinishNow(
          context,
          ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()))));
    }
  }
  // A response a default client accepts (4 MiB: ids take up to 3 bytes each for a 2^21
  // vocabulary); past it the client would see its own RESOURCE_EXHAUSTED, read as ours.
  if (ids->size() > kMaxTokenizeIds) {
    return FinishNow(context, ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
                                  "text: tokenizes to ", ids->size(), " tokens, more than the ",
                                  kMaxTokenizeIds, " a Tokenize response carries"))));
  }
  response->mutable_token_ids()->Add(ids->begin(), ids->end());
  response->set_count(static_cast<int32_t>(ids->size()));
  response->set_max_model_len(engine->limits().max_model_len);
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JetServeService::Detokenize(grpc::CallbackServerContext* context,
                                                      const v1::DetokenizeRequest* request,
                                                      v1::DetokenizeResponse* response) {
  if (absl::Status s = Authenticate(*context, "Detokenize"); !s.ok()) {
    return FinishNow(context, ToGrpcStatus(s));
  }
  const Engine* engine = engine_.load(std::memory_order_acquire);
  if (engine == nullptr) return FinishNow(context, kLoading);
  if (absl::Status s =
          ValidateTokenIds(request->token_ids(), engine->config().vocab_size, "token_ids");
      !s.ok()) {
    return FinishNow(context, ToGrpcStatus(s));
  }
  const std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  const bool skip_special =
      request->has_skip_special_tokens() ? request->skip_special_tokens() : true;
  response->set_text(engine->tokenizer().Decode(ids, skip_special));
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JetServeService::GetModelInfo(grpc::CallbackServerContext* context,
                                                        const v1::GetModelInfoRequest* request,
                                                        v1::GetModelInfoResponse* response) {
  if (absl::Status s = Authenticate(*context, "GetModelInfo"); !s.ok()) {
    return FinishNow(context, ToGrpcStatus(s));
  }
  const Engine* engine = engine_.load(std::memory_order_acquire);
  if (engine == nullptr) return FinishNow(context, kLoading);
  const ModelConfig& config = engine->config();
  response->set_model_name(model_name_);
  response->set_model_type(config.model_type);
  for (LayerType t : config.layer_types) response->add_layer_types(std::string(LayerTypeName(t)));
  response->set_vocab_size(config.vocab_size);
  response->set_max_position_embeddings(config.max_position_embeddings);
  response->set_hidden_size(config.hidden_size);
  response->set_swa_window_size(config.has_layer_type(LayerType::kSwa) ? config.swa_window_size
                                                                       : 0);
  response->mutable_eos_token_ids()->Add(config.eos_token_ids.begin(), config.eos_token_ids.end());
  response->set_bos_token_id(config.bos_token_id);
  const EngineLimits limits = engine->limits();
  v1::Limits* out = response->mutable_limits();
  out->set_max_model_len(limits.max_model_len);
  out->set_max_seqs(limits.max_seqs);
  out->set_max_batch_tokens(limits.max_batch_tokens);
  out->set_max_queue(limits.max_queue);
  out->set_max_logprobs(limits.max_logprobs);
  out->set_max_n(limits.max_n);
  out->set_max_prompt_tokens(limits.max_prompt_tokens);
  out->set_max_output_tokens(limits.max_output_tokens);
  out->set_max_stop_strings(limits.max_stop_strings);
  out->set_max_stop_length(limits.max_stop_length);
  response->set_device(device_);
  return FinishNow(context, grpc::Status::OK);
}

}  // namespace jetserve
