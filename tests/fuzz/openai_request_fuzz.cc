// Fuzzes the OpenAI HTTP request path: fuzz bytes parsed as a JSON body (as the HTTP server
// does), then ParseOpenAiRequest for both APIs with realistic limits; every accepted request
// must satisfy what the engine relies on (request_checks.h).
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/openai_api.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/request_checks.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace jetserve;
  nlohmann::json body =
      nlohmann::json::parse(data, data + size, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  const EngineLimits limits = fuzz::RealisticLimits();
  for (ApiKind kind : {ApiKind::kCompletions, ApiKind::kChat}) {
    for (int32_t vocab_size : fuzz::kVocabSizes) {
      absl::StatusOr<OpenAiJob> job =
          ParseOpenAiRequest(kind, body, "jetserve", limits, vocab_size);
      if (!job.ok()) {
        const absl::StatusCode code = job.status().code();
        FUZZ_CHECK(
            code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound,
            job.status().ToString());
        // Every error becomes an OpenAI error object with a 4xx status.
        FUZZ_CHECK(HttpStatusFor(code) / 100 == 4, absl::StrCat(HttpStatusFor(code)));
        FUZZ_CHECK(ErrorJson(job.status()).contains("error"), "error object");
        continue;
      }
      FUZZ_CHECK(!job->requests.empty(), "no engine request");
      FUZZ_CHECK(job->n >= 1 && job->n <= limits.max_n, absl::StrCat("n ", job->n));
      FUZZ_CHECK(job->logprobs >= -1 && job->logprobs <= limits.max_logprobs,
                 absl::StrCat("logprobs ", job->logprobs));
      for (const EngineRequest& r : job->requests) {
        fuzz::CheckAcceptedRequest(r, vocab_size, limits);
        FUZZ_CHECK(r.n == job->n, "n");
        if (kind == ApiKind::kChat) FUZZ_CHECK(!r.messages.empty(), "chat without messages");
      }
      if (kind == ApiKind::kChat) FUZZ_CHECK(job->requests.size() == 1, "one chat request");
      // The response envelope can be built for every accepted job.
      FUZZ_CHECK(ResponseEnvelope(*job, "jetserve", job->stream).is_object(), "envelope");
    }
  }
  return 0;
}
