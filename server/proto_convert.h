// Translation between the public protobuf API and the engine's plain C++ request types, with the
// validation that belongs to the API: presence, defaults, and ranges, reported with the proto
// field's name so that a client can tell what to fix.
#ifndef JETSERVE_SERVER_PROTO_CONVERT_H_
#define JETSERVE_SERVER_PROTO_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/request.h"
#include "engine/tokenizer/tokenizer.h"
#include "jetserve/v1/jetserve.pb.h"

namespace jetserve {

// API defaults for fields a request leaves unset (docs/api.md).
inline constexpr int32_t kDefaultMaxTokens = 16;
inline constexpr float kDefaultTemperature = 1.0f;  // as vLLM and the OpenAI API
inline constexpr size_t kMaxRequestIdLength = 256;

// Validates `request` and builds the engine's request. The request id is assigned here when
// empty, and an unset seed drawn at random, so the result is complete. Errors are
// INVALID_ARGUMENT with a message naming the field and the limit, e.g.
// "sampling.top_p: 0 is outside (0, 1]". Checks needing the tokenised prompt (its length against
// max_model_len) are the engine's, in Engine::Submit.
absl::StatusOr<EngineRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                              int32_t vocab_size, const EngineLimits& limits);

// A conversation's messages; INVALID_ARGUMENT when there are none.
absl::StatusOr<std::vector<ChatMessage>> ToChatMessages(const v1::ChatMessages& messages);

// Checks token ids against the vocabulary; `field` names them in the error.
absl::Status ValidateTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                              int32_t vocab_size, const std::string& field);

// "cmpl-" and 32 random hex digits.
std::string NewRequestId();

// A random seed for a request that gave none (the same process-wide source as request ids).
uint64_t NewRandomSeed();

// Appends one engine output to `response`, which may still hold earlier outputs of the same
// choice not yet sent (a slow reader gets them merged): token ids, text and logprobs
// concatenate, and the final fields are set from the last output. `tokenizer` renders logprob
// tokens as text. Returns upper estimates of what the output added, for the server's limits on
// message and buffer sizes.
struct AppendedBytes {
  size_t wire = 0;    // to the serialized message
  size_t memory = 0;  // to the message object (a top log-probability costs ~8x its wire bytes)
};
AppendedBytes AppendOutput(const RequestOutput& output, const Tokenizer& tokenizer,
                           v1::GenerateResponse* response);

v1::FinishReason ToProtoFinishReason(FinishReason reason);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_PROTO_CONVERT_H_
