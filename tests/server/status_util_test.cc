// What clients see of errors: internal errors' messages (which may hold file paths) are
// replaced by a generic one with the same code, in gRPC statuses and in OpenAI error objects;
// errors about the request keep their message.
#include "server/status_util.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/openai_api.h"

namespace jetserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kInternalDetail[] = "/srv/models/secret-model/model.safetensors: read failed";

TEST(ForClient, HidesInternalDetails) {
  for (absl::StatusCode code :
       {absl::StatusCode::kInternal, absl::StatusCode::kUnknown, absl::StatusCode::kDataLoss}) {
    const absl::Status original(code, kInternalDetail);
    const absl::Status shown = ForClient(original);
    EXPECT_EQ(shown.code(), code);
    EXPECT_THAT(std::string(shown.message()), Not(HasSubstr("/srv")));
    EXPECT_THAT(std::string(shown.message()), HasSubstr("internal error"));

    const grpc::Status grpc_status = ToGrpcStatus(original);
    EXPECT_EQ(static_cast<int>(grpc_status.error_code()), static_cast<int>(code));
    EXPECT_THAT(grpc_status.error_message(), Not(HasSubstr("/srv")));

    EXPECT_THAT(ErrorJson(original).dump(), Not(HasSubstr("/srv")));
  }
}

TEST(ForClient, KeepsRequestErrors) {
  const absl::Status invalid = absl::InvalidArgumentError("top_p: must be in (0, 1]");
  EXPECT_EQ(ForClient(invalid), invalid);
  EXPECT_EQ(ToGrpcStatus(invalid).error_message(), "top_p: must be in (0, 1]");
  EXPECT_EQ(ErrorJson(invalid)["error"]["message"], "top_p: must be in (0, 1]");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(ErrorJson, UnauthenticatedIsAnAuthenticationError) {
  const nlohmann::json e = ErrorJson(absl::UnauthenticatedError("missing or invalid API key"));
  EXPECT_EQ(e["error"]["type"], "authentication_error");
  EXPECT_EQ(e["error"]["code"], 401);
}

}  // namespace
}  // namespace jetserve
