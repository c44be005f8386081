// What every request the API layers (gRPC: proto_convert.h, HTTP: openai_api.h) accept must
// satisfy before the engine sees it; shared by request_fuzz and openai_request_fuzz.
#ifndef JETSERVE_TESTS_FUZZ_REQUEST_CHECKS_H_
#define JETSERVE_TESTS_FUZZ_REQUEST_CHECKS_H_

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "tests/fuzz/fuzz_util.h"

namespace jetserve::fuzz {

// The limits of a server started with the default flags, give or take.
inline EngineLimits RealisticLimits() {
  EngineLimits limits;
  limits.max_model_len = 4096;
  limits.max_seqs = 64;
  limits.max_batch_tokens = 2048;
  limits.max_queue = 256;
  limits.max_logprobs = 20;
  limits.max_n = 16;
  // As Engine::Create derives them from max_model_len and the serve flags' defaults.
  limits.max_prompt_tokens = limits.max_model_len - 1;
  limits.max_output_tokens = limits.max_model_len;
  limits.max_stop_strings = 16;
  limits.max_stop_length = 256;
  return limits;
}

// The byte-level default model's vocabulary and Qwen2.5's.
inline constexpr int32_t kVocabSizes[] = {259, 151936};

inline void CheckAcceptedRequest(const EngineRequest& r, int32_t vocab_size,
                                 const EngineLimits& limits) {
  for (int32_t id : r.prompt_ids) {
    FUZZ_CHECK(id >= 0 && id < vocab_size, absl::StrCat("prompt id ", id));
  }
  FUZZ_CHECK(r.max_tokens >= 1 && r.max_tokens <= limits.max_output_tokens,
             absl::StrCat("max_tokens ", r.max_tokens));
  FUZZ_CHECK(r.min_tokens >= 0 && r.min_tokens <= r.max_tokens,
             absl::StrCat("min_tokens ", r.min_tokens));
  FUZZ_CHECK(r.n >= 1 && r.n <= limits.max_n, absl::StrCat("n ", r.n));
  // The sampler trusts its parameters: what the API accepted must pass its own validation.
  absl::Status sampling = ValidateSamplingParams(r.sampling, vocab_size, limits.max_logprobs);
  FUZZ_CHECK(sampling.ok(), sampling.ToString());
  FUZZ_CHECK(static_cast<int64_t>(r.stop.size()) <= limits.max_stop_strings, "too many stops");
  for (const std::string& s : r.stop) {
    FUZZ_CHECK(!s.empty(), "empty stop string");
    FUZZ_CHECK(static_cast<int64_t>(s.size()) <= limits.max_stop_length, "stop too long");
  }
  for (int32_t id : r.stop_token_ids) {
    FUZZ_CHECK(id >= 0 && id < vocab_size, absl::StrCat("stop token id ", id));
  }
}

}  // namespace jetserve::fuzz

#endif  // JETSERVE_TESTS_FUZZ_REQUEST_CHECKS_H_
