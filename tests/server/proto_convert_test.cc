// ToEngineRequest's defaults and validation, and AppendOutput's merging, without a server.
#include "server/proto_convert.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>

#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jetserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int32_t kVocab = 259;

EngineLimits Limits() {
  EngineLimits l;
  l.max_model_len = 8192;
  l.max_logprobs = 20;
  l.max_n = 16;
  l.max_output_tokens = 8192;
  l.max_stop_strings = 16;
  l.max_stop_length = 256;
  return l;
}

v1::GenerateRequest Ids(std::initializer_list<int32_t> ids) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  return r;
}

void ExpectInvalid(const v1::GenerateRequest& r, const std::string& field) {
  absl::StatusOr<EngineRequest> out = ToEngineRequest(r, kVocab, Limits());
  ASSERT_FALSE(out.ok()) << field;
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr(field));
}

TEST(ToEngineRequest, DefaultsForUnsetFields) {
  absl::StatusOr<EngineRequest> r = ToEngineRequest(Ids({1, 2, 3}), kVocab, Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->prompt_ids, ElementsAre(1, 2, 3));
  EXPECT_TRUE(r->prompt_text.empty());
  EXPECT_EQ(r->max_tokens, 16);
  EXPECT_EQ(r->sampling.temperature, 1.0f);
  EXPECT_EQ(r->sampling.top_p, 1.0f);
  EXPECT_EQ(r->sampling.top_k, 0);
  EXPECT_EQ(r->sampling.top_logprobs, 0);
  EXPECT_FALSE(r->sampling.return_logprobs);
  EXPECT_EQ(r->n, 1);
  EXPECT_EQ(r->min_tokens, 0);
  EXPECT_EQ(r->sampling.repetition_penalty, 1.0f);
  EXPECT_TRUE(r->skip_special_tokens);
  EXPECT_FALSE(r->ignore_eos);
  EXPECT_FALSE(r->allow_special);
  EXPECT_FALSE(r->deadline.has_value());
  EXPECT_THAT(r->request_id, HasSubstr("cmpl-"));
  EXPECT_EQ(r->request_id.size(), 5u + 32u);
  // Unset seeds and ids are drawn afresh for every request.
  absl::StatusOr<EngineRequest> again = ToEngineRequest(Ids({1}), kVocab, Limits());
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->request_id, r->request_id);
  EXPECT_NE(again->sampling.seed, r->sampling.seed);
  // The default max_tokens stays within the server's --max-output-tokens.
  EngineLimits small = Limits();
  small.max_output_tokens = 8;
  absl::StatusOr<EngineRequest> capped = ToEngineRequest(Ids({1}), kVocab, small);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->max_tokens, 8);
}

TEST(ToEngineRequest, ExplicitValuesIncludingZero) {
  v1::GenerateRequest req;
  req.set_text("hi <|im_end|>");
  req.set_request_id("mine");
  req.set_honor_special_tokens(true);
  v1::SamplingParams* p = req.mutable_sampling();
  p->set_max_tokens(5);
  p->set_temperature(0.0f);  // explicitly greedy: not the default 1.0
  p->set_top_p(0.5f);
  p->set_top_k(-1);  // vLLM's "off"
  p->set_seed(0);
  p->set_logprobs(20);
  p->add_stop("\n\n");
  p->add_stop_token_ids(258);
  p->set_ignore_eos(true);
  p->set_skip_special_tokens(false);
  p->set_include_stop_str_in_output(true);
  absl::StatusOr<EngineRequest> r = ToEngineRequest(req, kVocab, Limits());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request_id, "mine");
  EXPECT_EQ(r->prompt_text, "hi <|im_end|>");
  EXPECT_TRUE(r->allow_special);
  EXPECT_EQ(r->max_tokens, 5);
  EXPECT_EQ(r->sampling.temperature, 0.0f);
  EXPECT_EQ(r->sampling.top_p, 0.5f);
  EXPECT_EQ(r->sampling.top_k, 0);
  EXPECT_EQ(r->sampling.seed, 0u);
  EXPECT_EQ(r->sampling.top_logprobs, 20);
  EXPECT_TRUE(r->sampling.return_logprobs);
  EXPECT_THAT(r->stop, ElementsAre("\n\n"));
  EXPECT_THAT(r->stop_token_ids, ElementsAre(258));
  EXPECT_TRUE(r->ignore_eos);
  EXPECT_FALSE(r->skip_special_tokens);
  EXPECT_TRUE(r->include_stop_str_in_output);
}

TEST(ToEngineRequest, InvalidFieldsAreNamed) {
  ExpectInvalid(v1::GenerateRequest(), "prompt");
  v1::GenerateRequest empty_text;
  empty_text.set_text("");
  ExpectInvalid(empty_text, "text");
  v1::GenerateRequest empty_ids;
  empty_ids.mutable_token_ids();
  ExpectInvalid(empty_ids, "token_ids");
  ExpectInvalid(Ids({1, kVocab}), "token_ids.ids[1]");
  ExpectInvalid(Ids({-1}), "token_ids.ids[0]");
  auto with = [](auto set) {
    v1::GenerateRequest r = Ids({1});
    set(r.mutable_sampling());
    return r;
  };
  ExpectInvalid(with([](auto* p) { p->set_max_tokens(0); }), "sampling.max_tokens");
  ExpectInvalid(with([](auto* p) { p->set_max_tokens(8193); }), "sampling.max_tokens");
  ExpectInvalid(with([](auto* p) { p->set_temperature(std::nanf("")); }), "sampling.temperature");
  ExpectInvalid(with([](auto* p) { p->set_temperature(-1); }), "sampling.temperature");
  ExpectInvalid(with([](auto* p) { p->set_temperature(std::numeric_limits<float>::infinity()); }),
                "sampling.temperature");
  ExpectInvalid(with([](auto* p) { p->set_top_p(0); }), "sampling.top_p");
  ExpectInvalid(with([](auto* p) { p->set_top_p(std::nanf("")); }), "sampling.top_p");
  ExpectInvalid(with([](auto* p) { p->set_top_p(1.01f); }), "sampling.top_p");
  ExpectInvalid(with([](auto* p) { p->set_top_k(-2); }), "sampling.top_k");
  ExpectInvalid(with([](auto* p) { p->set_logprobs(21); }), "sampling.logprobs");
  ExpectInvalid(with([](auto* p) { p->set_logprobs(-1); }), "sampling.logprobs");
  ExpectInvalid(with([](auto* p) { p->add_stop(""); }), "sampling.stop[0]");
  ExpectInvalid(with([](auto* p) { p->add_stop_token_ids(kVocab); }), "sampling.stop_token_ids[0]");
  v1::GenerateRequest long_id = Ids({1});
  long_id.set_request_id(std::string(257, 'x'));
  ExpectInvalid(long_id, "request_id");
}

TEST(AppendOutput, MergesOutputsAndSetsTheFinalFields) {
  // The byte-level tokenizer of the default model: ids 0..255 are the bytes.
  const std::string dir = ::testing::TempDir() + "/proto_convert_tokenizer";
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteByteLevelTokenizer(dir).ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::LoadFromDir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  RequestOutput first;
  first.request_id = "r";
  first.token_ids = {'a'};
  first.text = "a";
  first.logprobs = {TokenLogprobs{'a', -0.5f, {{'a', -0.5f}, {'b', -1.5f}}}};
  RequestOutput last;
  last.request_id = "r";
  last.token_ids = {'b'};
  last.text = "b";
  last.logprobs = {TokenLogprobs{'b', -0.25f, {{'b', -0.25f}, {0xC3, -2.0f}}}};
  last.finished = true;
  last.finish_reason = FinishReason::kStop;
  last.stop_reason = "1";
  last.prompt_tokens = 4;
  last.completion_tokens = 2;
  v1::GenerateResponse resp;
  AppendOutput(first, **tok, &resp);
  EXPECT_EQ(resp.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_FALSE(resp.has_usage());
  AppendOutput(last, **tok, &resp);
  EXPECT_EQ(resp.request_id(), "r");
  EXPECT_THAT(resp.token_ids(), ElementsAre('a', 'b'));
  EXPECT_EQ(resp.text(), "ab");
  ASSERT_EQ(resp.logprobs_size(), 2);
  EXPECT_EQ(resp.logprobs(0).token_id(), 'a');
  EXPECT_EQ(resp.logprobs(0).token(), "a");
  EXPECT_EQ(resp.logprobs(0).logprob(), -0.5f);
  ASSERT_EQ(resp.logprobs(1).top_logprobs_size(), 2);
  EXPECT_EQ(resp.logprobs(1).top_logprobs(0).token(), "b");
  // A lone lead byte of a 2-byte character renders as U+FFFD, keeping the proto string UTF-8.
  EXPECT_EQ(resp.logprobs(1).top_logprobs(1).token(), "\xEF\xBF\xBD");
  EXPECT_EQ(resp.logprobs(1).top_logprobs(1).logprob(), -2.0f);
  EXPECT_EQ(resp.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(resp.stop_reason(), "1");
  EXPECT_EQ(resp.usage().prompt_tokens(), 4);
  EXPECT_EQ(resp.usage().completion_tokens(), 2);
  EXPECT_EQ(resp.usage().total_tokens(), 6);
}

TEST(ToProtoFinishReason, EveryReason) {
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kStop), v1::FINISH_REASON_STOP);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kLength), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kCancelled), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kError), v1::FINISH_REASON_ERROR);
}

}  // namespace
}  // namespace jetserve
