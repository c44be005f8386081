#include "server/openai_api.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <limits>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"
#include "server/proto_convert.h"
#include "server/status_util.h"

namespace jetserve {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

std::string TypeName(const json& v) { return v.type_name(); }

// Characters in UTF-8 bytes: every byte that does not continue a character starts one.
size_t Utf8Chars(std::string_view bytes) {
  return static_cast<size_t>(std::count_if(bytes.begin(), bytes.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

// Typed optional fields: absent or null means "not given".
bool Given(const json& body, const char* key) {
  return body.contains(key) && !body.at(key).is_null();
}

absl::StatusOr<double> Number(const json& body, const char* key) {
  const json& v = body.at(key);
  if (!v.is_number()) {
    return Invalid(absl::StrCat(key, ": expected a number, got ", TypeName(v)));
  }
  return v.get<double>();
}

// What a rejected value was, for an error message: scalars as they were sent (they are short);
// arrays and objects by their type only (dumping one nested 100,000 deep would overflow the
// stack).
std::string Shown(const json& v) {
  if (v.is_structured()) return TypeName(v);
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// An integer that does not fit int64 (json keeps those above INT64_MAX as unsigned) is
// reported as it was sent, not wrapped negative.
bool OutOfInt64(const json& v) {
  return v.is_number_unsigned() &&
         v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

absl::StatusOr<int64_t> Integer(const json& body, const char* key) {
  const json& v = body.at(key);
  if (OutOfInt64(v)) return Invalid(absl::StrCat(key, ": ", Shown(v), " is too large"));
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
      return static_cast<int64_t>(d);
    }
  }
  return Invalid(absl::StrCat(key, ": expected an integer, got ", Shown(v)));
}

absl::StatusOr<bool> Bool(const json& body, const char* key) {
  const json& v = body.at(key);
  if (!v.is_boolean()) return Invalid(absl::StrCat(key, ": expected true or false"));
  return v.get<bool>();
}

// An int32 field within [lo, hi].
absl::StatusOr<int32_t> BoundedInt(const json& body, const char* key, int64_t lo, int64_t hi,
                                   const std::string& why = "") {
  absl::StatusOr<int64_t> v = Integer(body, key);
  if (!v.ok()) return v.status();
  if (*v < lo || *v > hi) {
    return Invalid(absl::StrCat(key, ": ", *v, " is outside [", lo, ", ", hi, "]", why));
  }
  return static_cast<int32_t>(*v);
}

absl::StatusOr<std::vector<int32_t>> TokenList(const json& v, const std::string& field,
                                               int32_t vocab_size) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_number_integer() || OutOfInt64(v[i])) {
      return Invalid(absl::StrCat(field, "[", i, "]: expected a token id, got ", Shown(v[i])));
    }
    const int64_t id = v[i].get<int64_t>();
    if (id < 0 || id >= vocab_size) {
      return Invalid(absl::StrCat(field, "[", i, "]: token id ", id,
                                  " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// The prompt of a completions request: a string, a list of strings, a list of token ids, or a
// list of such lists. Each becomes one engine request.
absl::Status ParsePrompts(const json& body, int32_t vocab_size, int64_t max_prompts,
                          std::vector<EngineRequest>* out) {
  if (!Given(body, "prompt")) return Invalid("prompt: required");
  const json& p = body.at("prompt");
  auto text = [&](const json& v, const std::string& field) -> absl::Status {
    if (v.get_ref<const std::string&>().empty()) return Invalid(absl::StrCat(field, ": empty"));
    EngineRequest r;
    r.prompt_text = v.get<std::string>();
    out->push_back(std::move(r));
    return absl::OkStatus();
  };
  auto ids = [&](const json& v, const std::string& field) -> absl::Status {
    if (v.empty()) return Invalid(absl::StrCat(field, ": empty"));
    absl::StatusOr<std::vector<int32_t>> list = TokenList(v, field, vocab_size);
    if (!list.ok()) return list.status();
    EngineRequest r;
    r.prompt_ids = *std::move(list);
    out->push_back(std::move(r));
    return absl::OkStatus();
  };
  if (p.is_string()) return text(p, "prompt");
  if (!p.is_array() || p.empty()) {
    return Invalid("prompt: expected a string, a list of strings or a list of token ids");
  }
  if (p[0].is_number()) return ids(p, "prompt");
  // More prompts than the engine can hold at once (running + waiting) could never be accepted
  // together: a 429 would send a retrying client round for ever. Checked before anything is
  // built from them.
  if (static_cast<int64_t>(p.size()) > max_prompts) {
    return Invalid(absl::StrCat("prompt: ", p.size(), " prompts, more than the ", max_prompts,
                                " the server takes at once (its --max-seqs + --max-queue)"));
  }
  for (size_t i = 0; i < p.size(); ++i) {
    const std::string field = absl::StrCat("prompt[", i, "]");
    absl::Status s = p[i].is_string()  ? text(p[i], field)
                     : p[i].is_array() ? ids(p[i], field)
                                       : Invalid(absl::StrCat(field,
                                                              ": expected a string or a "
                                                              "list of token ids"));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// Chat messages: role and content (a string, or a list of {"type": "text", "text": ...} parts).
absl::Status ParseMessages(const json& body, EngineRequest* r) {
  if (!Given(body, "messages")) return Invalid("messages: required");
  const json& m = body.at("messages");
  if (!m.is_array() || m.empty()) return Invalid("messages: expected a non-empty list");
  for (size_t i = 0; i < m.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m[i].is_object()) return Invalid(absl::StrCat(field, ": expected an object"));
    if (!m[i].contains("role") || !m[i]["role"].is_string()) {
      return Invalid(absl::StrCat(field, ".role: required string"));
    }
    ChatMessage message;
    message.role = m[i]["role"].get<std::string>();
    // OpenAI's "developer" messages are its newer name for system messages.
    if (message.role == "developer") message.role = "system";
    const json& content = m[i].contains("content") ? m[i]["content"] : json();
    if (content.is_string()) {
      message.content = content.get<std::string>();
    } else if (content.is_array()) {
      for (size_t j = 0; j < content.size(); ++j) {
        const json& part = content[j];
        if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
            !part.contains("text") || !part["text"].is_string()) {
          return Invalid(absl::StrCat(field, ".content[", j,
                                      "]: only {\"type\": \"text\", \"text\": ...} parts are "
                                      "supported"));
        }
        message.content += part["text"].get<std::string>();
      }
    } else {
      return Invalid(absl::StrCat(field, ".content: expected a string or a list of text parts"));
    }
    if (m[i].contains("tool_calls") && !m[i]["tool_calls"].is_null()) {
      return Invalid(absl::StrCat(field, ".tool_calls: tools are not supported"));
    }
    r->messages.push_back(std::move(message));
  }
  return absl::OkStatus();
}

// The sampling fields shared by both APIs, applied to `r`.
absl::Status ParseSampling(ApiKind kind, const json& body, const EngineLimits& limits,
                           int32_t vocab_size, OpenAiJob* job, EngineRequest* r) {
  SamplingParams& s = r->sampling;
  s.temperature = kDefaultTemperature;
  auto number = [&](const char* key, float* out) -> absl::Status {
    if (!Given(body, key)) return absl::OkStatus();
    absl::StatusOr<double> v = Number(body, key);
    if (!v.ok()) return v.status();
    *out = static_cast<float>(*v);
    return absl::OkStatus();
  };
  for (auto [key, out] : std::initializer_list<std::pair<const char*, float*>>{
           {"temperature", &s.temperature},
           {"top_p", &s.top_p},
           {"min_p", &s.min_p},
           {"repetition_penalty", &s.repetition_penalty},
           {"presence_penalty", &s.presence_penalty},
           {"frequency_penalty", &s.frequency_penalty}}) {
    if (absl::Status st = number(key, out); !st.ok()) return st;
  }
  if (Given(body, "top_k")) {
    absl::StatusOr<int32_t> k = BoundedInt(body, "top_k", -1, vocab_size, " (-1 or 0: off)");
    if (!k.ok()) return k.status();
    s.top_k = *k == -1 ? 0 : *k;
  }
  if (Given(body, "logit_bias")) {
    const json& bias = body.at("logit_bias");
    if (!bias.is_object()) return Invalid("logit_bias: expected an object {token id: bias}");
    for (const auto& [key, value] : bias.items()) {
      int32_t id = -1;
      const auto [ptr, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (ec != std::errc() || ptr != key.data() + key.size() || !value.is_number()) {
        return Invalid(
            absl::StrCat("logit_bias: entry \"", key, "\" must map a token id to a number"));
      }
      s.logit_bias.emplace_back(id, value.get<float>());
    }
    std::sort(s.logit_bias.begin(), s.logit_bias.end());
    // "1" and "01" name the same token: its biases would add up past the documented range.
    for (size_t i = 1; i < s.logit_bias.size(); ++i) {
      if (s.logit_bias[i].first == s.logit_bias[i - 1].first) {
        return Invalid(absl::StrCat("logit_bias: token id ", s.logit_bias[i].first,
                                    " is given more than once"));
      }
    }
  }
  if (Given(body, "seed")) {
    absl::StatusOr<int64_t> seed = Integer(body, "seed");
    if (!seed.ok()) return seed.status();
    s.seed = static_cast<uint64_t>(*seed);
  } else {
    s.seed = NewRandomSeed();
  }
  // Logprobs: completions take a top-N count; chat a flag plus top_logprobs.
  if (kind == ApiKind::kCompletions) {
    if (Given(body, "logprobs")) {
      absl::StatusOr<int32_t> n =
          BoundedInt(body, "logprobs", 0, limits.max_logprobs, " (the server's --max-logprobs)");
      if (!n.ok()) return n.status();
      job->logprobs = *n;
    }
  } else {
    bool want = false;
    if (Given(body, "logprobs")) {
      absl::StatusOr<bool> b = Bool(body, "logprobs");
      if (!b.ok()) return b.status();
      want = *b;
    }
    if (Given(body, "top_logprobs")) {
      absl::StatusOr<int32_t> n = BoundedInt(body, "top_logprobs", 0, limits.max_logprobs,
                                             " (the server's --max-logprobs)");
      if (!n.ok()) return n.status();
      if (!want) return Invalid("top_logprobs: requires logprobs to be true");
      job->logprobs = *n;
    } else if (want) {
      job->logprobs = 0;
    }
  }
  s.return_logprobs = job->logprobs >= 0;
  s.top_logprobs = std::max(job->logprobs, 0);
  if (absl::Status st = ValidateSamplingParams(s, vocab_size, limits.max_logprobs); !st.ok()) {
    return st;
  }

  // Lengths.
  const char* max_key = kind == ApiKind::kChat && Given(body, "max_completion_tokens")
                            ? "max_completion_tokens"
                            : "max_tokens";
  if (Given(body, max_key)) {
    absl::StatusOr<int32_t> m = BoundedInt(body, max_key, 1, limits.max_output_tokens,
                                           " (the server's --max-output-tokens)");
    if (!m.ok()) return m.status();
    r->max_tokens = *m;
  } else {
    // Completions default to 16 tokens, as OpenAI's; chat runs to the end of the context.
    r->max_tokens =
        kind == ApiKind::kChat
            ? static_cast<int32_t>(limits.max_output_tokens)
            : static_cast<int32_t>(std::min<int64_t>(kDefaultMaxTokens, limits.max_output_tokens));
  }
  if (Given(body, "min_tokens")) {
    absl::StatusOr<int32_t> m = BoundedInt(body, "min_tokens", 0, r->max_tokens, " (max_tokens)");
    if (!m.ok()) return m.status();
    r->min_tokens = *m;
  }
  if (Given(body, "n")) {
    absl::StatusOr<int32_t> n = BoundedInt(body, "n", 1, limits.max_n, " (the server's --max-n)");
    if (!n.ok()) return n.status();
    job->n = *n;
  }
  r->n = job->n;
  if (Given(body, "best_of")) {
    absl::StatusOr<int64_t> b = Integer(body, "best_of");
    if (!b.ok()) return b.status();
    if (*b != job->n) return Invalid("best_of: only best_of equal to n is supported");
  }

  // Stopping.
  if (Given(body, "stop")) {
    const json& stop = body.at("stop");
    std::vector<json> items =
        stop.is_array() ? std::vector<json>(stop.begin(), stop.end()) : std::vector<json>{stop};
    if (static_cast<int64_t>(items.size()) > limits.max_stop_strings) {
      return Invalid(absl::StrCat("stop: ", items.size(), " stop strings, more than the limit of ",
                                  limits.max_stop_strings, " (the server's --max-stop-strings)"));
    }
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string() || items[i].get_ref<const std::string&>().empty()) {
        return Invalid(absl::StrCat("stop[", i, "]: expected a non-empty string"));
      }
      if (static_cast<int64_t>(items[i].get_ref<const std::string&>().size()) >
          limits.max_stop_length) {
        return Invalid(absl::StrCat("stop[", i, "]: more than the limit of ",
                                    limits.max_stop_length,
                                    " bytes (the server's --max-stop-length)"));
      }
      r->stop.push_back(items[i].get<std::string>());
    }
  }
  if (Given(body, "stop_token_ids")) {
    const json& ids = body.at("stop_token_ids");
    if (!ids.is_array()) return Invalid("stop_token_ids: expected a list of token ids");
    absl::StatusOr<std::vector<int32_t>> list = TokenList(ids, "stop_token_ids", vocab_size);
    if (!list.ok()) return list.status();
    r->stop_token_ids = *std::move(list);
  }
  for (auto [key, out] : std::initializer_list<std::pair<const char*, bool*>>{
           {"ignore_eos", &r->ignore_eos},
           {"skip_special_tokens", &r->skip_special_tokens},
           {"include_stop_str_in_output", &r->include_stop_str_in_output}}) {
    if (!Given(body, key)) continue;
    absl::StatusOr<bool> b = Bool(body, key);
    if (!b.ok()) return b.status();
    *out = *b;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OpenAiJob> ParseOpenAiRequest(ApiKind kind, const json& body,
                                             const std::string& model_name,
                                             const EngineLimits& limits, int32_t vocab_size) {
  if (!body.is_object()) return Invalid("the request body must be a JSON object");
  OpenAiJob job;
  job.kind = kind;
  job.id = absl::StrCat(kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-", NewRequestId().substr(5));
  job.created = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  if (Given(body, "model")) {
    if (!body.at("model").is_string()) return Invalid("model: expected a string");
    if (body.at("model").get<std::string>() != model_name) {
      return absl::NotFoundError(absl::StrCat("The model `", body.at("model").get<std::string>(),
                                              "` does not exist; this server serves `", model_name,
                                              "`"));
    }
  }
  for (const char* unsupported : {"suffix", "tools", "tool_choice", "functions", "function_call"}) {
    if (Given(body, unsupported)) {
      return Invalid(absl::StrCat(unsupported, ": not supported by this server"));
    }
  }
  if (Given(body, "response_format")) {
    const json& f = body.at("response_format");
    if (!f.is_object() || !f.contains("type") || f["type"] != "text") {
      return Invalid("response_format: only {\"type\": \"text\"} is supported");
    }
  }
  if (Given(body, "stream")) {
    absl::StatusOr<bool> b = Bool(body, "stream");
    if (!b.ok()) return b.status();
    job.stream = *b;
  }
  if (Given(body, "stream_options")) {
    const json& o = body.at("stream_options");
    if (!job.stream) return Invalid("stream_options: only allowed when stream is true");
    if (!o.is_object()) return Invalid("stream_options: expected an object");
    if (o.contains("include_usage")) {
      if (!o["include_usage"].is_boolean()) {
        return Invalid("stream_options.include_usage: expected true or false");
      }
      job.include_usage = o["include_usage"].get<bool>();
    }
  }
  if (kind == ApiKind::kCompletions && Given(body, "echo")) {
    absl::StatusOr<bool> b = Bool(body, "echo");
    if (!b.ok()) return b.status();
    job.echo = *b;
  }

  EngineRequest base;
  absl::Status s = ParseSampling(kind, body, limits, vocab_size, &job, &base);
  if (!s.ok()) return s;
  if (job.echo && job.logprobs >= 0) {
    return Invalid("echo: not supported together with logprobs (prompt logprobs)");
  }
  std::vector<EngineRequest> prompts;
  if (kind == ApiKind::kChat) {
    EngineRequest r;
    s = ParseMessages(body, &r);
    prompts.push_back(std::move(r));
  } else {
    s = ParsePrompts(body, vocab_size, limits.max_seqs + limits.max_queue, &prompts);
  }
  if (!s.ok()) return s;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineRequest r = base;
    r.prompt_text = std::move(prompts[i].prompt_text);
    r.prompt_ids = std::move(prompts[i].prompt_ids);
    r.messages = std::move(prompts[i].messages);
    r.request_id = prompts.size() == 1 ? job.id : absl::StrCat(job.id, "-", i);
    job.requests.push_back(std::move(r));
  }
  return job;
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

json ErrorJson(const absl::Status& original) {
  const absl::Status status = ForClient(original);
  const int http = HttpStatusFor(status.code());
  const char* type = http == 400   ? "invalid_request_error"
                     : http == 401 ? "authentication_error"
                     : http == 403 ? "permission_error"
                     : http == 404 ? "not_found_error"
                     : http == 429 ? "rate_limit_error"
                     : http == 503 ? "service_unavailable"
                                   : "server_error";
  // The field a 400 is about: the message starts with it ("top_p: ...").
  json param = nullptr;
  const std::string message(status.message());
  if (http == 400) {
    const size_t colon = message.find(':');
    if (colon != std::string::npos && colon > 0 &&
        message.find(' ') > colon) {  // a field name has no spaces
      param = message.substr(0, colon);
    }
  }
  return {{"error", {{"message", message}, {"type", type}, {"param", param}, {"code", http}}}};
}

std::string OpenAiFinishReason(FinishReason reason) {
  return reason == FinishReason::kLength ? "length" : "stop";
}

json UsageJson(const std::vector<ChoiceBuilder>& choices, int32_t n) {
  int64_t prompt_tokens = 0, completion_tokens = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i % n == 0) prompt_tokens += choices[i].prompt_tokens();
    completion_tokens += choices[i].completion_tokens();
  }
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json ResponseEnvelope(const OpenAiJob& job, const std::string& model_name, bool chunk) {
  const char* object = job.kind == ApiKind::kChat
                           ? (chunk ? "chat.completion.chunk" : "chat.completion")
                           : "text_completion";
  return {{"id", job.id},
          {"object", object},
          {"created", job.created},
          {"model", model_name},
          {"choices", json::array()}};
}

ChoiceBuilder::ChoiceBuilder(const OpenAiJob& job, int32_t index, const Tokenizer& tokenizer)
    : job_(job), index_(index), tokenizer_(tokenizer) {
  if (job.echo) {
    const EngineRequest& r = job.requests[index / job.n];
    text_ = r.prompt_ids.empty() ? r.prompt_text : tokenizer.Decode(r.prompt_ids, false);
  }
}

void ChoiceBuilder::Add(const RequestOutput& output) {
  text_ += output.text;
  last_output_chars_ = token_chars_;
  for (const TokenLogprobs& lp : output.logprobs) {
    token_chars_ += Utf8Chars(tokenizer_.TokenBytes(lp.id));
  }
  logprobs_.insert(logprobs_.end(), output.logprobs.begin(), output.logprobs.end());
  completion_tokens_ = output.completion_tokens;
  prompt_tokens_ = output.prompt_tokens;
  if (output.finished) {
    finish_reason_ = OpenAiFinishReason(output.finish_reason);
    stop_reason_ = output.stop_reason;
  }
}

std::string ChoiceBuilder::TokenName(const std::string& bytes) {
  if (utf8::FindInvalid(bytes) == std::string_view::npos) return bytes;
  std::string name = "bytes:";
  constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : bytes) {
    name += "\\x";
    name += kHex[c >> 4];
    name += kHex[c & 0xF];
  }
  return name;
}

json ChoiceBuilder::LogprobsJson(const std::vector<TokenLogprobs>& lps, size_t text_offset) const {
  if (job_.logprobs < 0) return nullptr;
  if (job_.kind == ApiKind::kChat) {
    // {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
    // "bytes"}]}]}
    auto entry = [&](int32_t id, float logprob) {
      const std::string bytes = tokenizer_.TokenBytes(id);
      return json{{"token", tokenizer_.Decode({id}, false)},
                  {"logprob", logprob},
                  {"bytes", std::vector<uint8_t>(bytes.begin(), bytes.end())}};
    };
    json content = json::array();
    for (const TokenLogprobs& lp : lps) {
      json e = entry(lp.id, lp.logprob);
      e["top_logprobs"] = json::array();
      for (const auto& [id, v] : lp.top) e["top_logprobs"].push_back(entry(id, v));
      content.push_back(std::move(e));
    }
    return {{"content", std::move(content)}};
  }
  // Completions: parallel lists; top_logprobs as {token text: logprob} maps.
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  // Offsets count characters, as OpenAI's (Python string indices): a token's offset is the
  // number of characters the tokens before it began.
  size_t offset = text_offset;
  for (const TokenLogprobs& lp : lps) {
    const std::string bytes = tokenizer_.TokenBytes(lp.id);
    tokens.push_back(TokenName(bytes));
    token_logprobs.push_back(lp.logprob);
    json alternatives = json::object();
    for (const auto& [id, v] : lp.top) alternatives[TokenName(tokenizer_.TokenBytes(id))] = v;
    top.push_back(std::move(alternatives));
    offsets.push_back(offset);
    offset += Utf8Chars(bytes);
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json ChoiceBuilder::Final() const {
  json choice = {{"index", index_},
                 {"logprobs", LogprobsJson(logprobs_, 0)},
                 {"finish_reason", finish_reason_.empty() ? json(nullptr) : json(finish_reason_)}};
  if (job_.kind == ApiKind::kChat) {
    choice["message"] = {{"role", "assistant"}, {"content", text_}};
  } else {
    choice["text"] = text_;
  }
  // vLLM's extension: the stop string or token id that ended the choice.
  choice["stop_reason"] = stop_reason_.empty() ? json(nullptr) : json(stop_reason_);
  return choice;
}

json ChoiceBuilder::Delta(const RequestOutput& output, bool first) const {
  std::string text = output.text;
  if (first && job_.echo) text = text_;  // Add(output) came first: the prompt and this text
  json choice = {{"index", index_},
                 {"logprobs", LogprobsJson(output.logprobs, last_output_chars_)},
                 {"finish_reason", output.finished ? json(OpenAiFinishReason(output.finish_reason))
                                                   : json(nullptr)}};
  if (job_.kind == ApiKind::kChat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  if (output.finished) {
    choice["stop_reason"] = output.stop_reason.empty() ? json(nullptr) : json(output.stop_reason);
  }
  return choice;
}

}  // namespace jetserve
