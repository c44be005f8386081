// Fuzzes the gRPC request path: fuzz bytes decoded as a v1::GenerateRequest (what the gRPC
// server hands the reactor), then ToEngineRequest with realistic limits; every accepted request
// must satisfy what the engine relies on (request_checks.h).
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "jetserve/v1/jetserve.pb.h"
#include "server/proto_convert.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/request_checks.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // Protobuf logs every string field with invalid UTF-8 that it refuses to parse: noise that
  // slows fuzzing down, and the refusal is already the return value.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace jetserve;
  v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const EngineLimits limits = fuzz::RealisticLimits();
  for (int32_t vocab_size : fuzz::kVocabSizes) {
    absl::StatusOr<EngineRequest> converted = ToEngineRequest(request, vocab_size, limits);
    if (!converted.ok()) {
      FUZZ_CHECK(converted.status().code() == absl::StatusCode::kInvalidArgument,
                 converted.status().ToString());
      continue;
    }
    fuzz::CheckAcceptedRequest(*converted, vocab_size, limits);
    FUZZ_CHECK(
        !converted->request_id.empty() && converted->request_id.size() <= kMaxRequestIdLength,
        "request_id " + converted->request_id);
    if (!request.request_id().empty()) {
      FUZZ_CHECK(converted->request_id == request.request_id(), "request_id kept");
    }
    // Exactly one prompt, from the oneof the client set.
    const int prompts = !converted->prompt_ids.empty() + !converted->messages.empty() +
                        !converted->prompt_text.empty();
    FUZZ_CHECK(prompts == 1, absl::StrCat(prompts, " prompts"));
  }
  return 0;
}
