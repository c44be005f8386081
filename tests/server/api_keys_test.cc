// The API-key checker: key-file parsing, "Bearer" parsing, and that exactly the configured keys
// are accepted (not their prefixes, extensions, other cases, or nothing). Timing is not
// asserted (tests must not depend on timing); the constant-time property rests on comparing
// fixed-length digests with CRYPTO_memcmp over every key, which api_keys.cc shows.
#include "server/api_keys.h"

#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_paths.h"

namespace jetserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(ParseApiKeys, OneKeyPerLineSkippingBlanksAndComments) {
  absl::StatusOr<std::vector<std::string>> keys =
      ParseApiKeys("# team A\nalpha-123\n\n   \n  beta_456  \r\n#gamma\ndelta", "f");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, ElementsAre("alpha-123", "beta_456", "delta"));
}

TEST(ParseApiKeys, EmptyTextHasNoKeys) {
  absl::StatusOr<std::vector<std::string>> keys = ParseApiKeys("\n# nothing\n", "f");
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->empty());
}

TEST(ParseApiKeys, RejectsSpacesAndControlCharactersWithoutEchoingTheLine) {
  for (const std::string& text : std::vector<std::string>{
           "ok\nsecret part two\n", "ok\nsecret\x01value\n", "ok\nsecret\xc3\xa9value\n"}) {
    absl::StatusOr<std::vector<std::string>> keys = ParseApiKeys(text, "keys.txt");
    ASSERT_FALSE(keys.ok());
    const std::string message(keys.status().message());
    EXPECT_THAT(message, HasSubstr("keys.txt: line 2"));
    EXPECT_THAT(message, Not(HasSubstr("secret")));
  }
}

TEST(BearerToken, ParsesTheScheme) {
  EXPECT_EQ(BearerToken("Bearer abc"), "abc");
  EXPECT_EQ(BearerToken("bearer abc"), "abc");
  EXPECT_EQ(BearerToken("BEARER   abc  "), "abc");
  EXPECT_EQ(BearerToken("Basic abc"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearerabc"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer "), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer"), std::nullopt);
  EXPECT_EQ(BearerToken("abc"), std::nullopt);
  EXPECT_EQ(BearerToken(""), std::nullopt);
}

TEST(ApiKeys, AcceptsEveryConfiguredKeyAndNothingElse) {
  const std::vector<std::string> configured = {"key-one-0123456789", "k2", "third_KEY"};
  absl::StatusOr<ApiKeys> keys = ApiKeys::FromKeys(configured);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 3u);
  for (const std::string& key : configured) {
    EXPECT_TRUE(keys->Matches(key)) << key;
    EXPECT_TRUE(keys->Authorizes("Bearer " + key)) << key;
    EXPECT_FALSE(keys->Matches(key.substr(0, key.size() - 1))) << "prefix of " << key;
    EXPECT_FALSE(keys->Matches(key + "x")) << "extension of " << key;
    EXPECT_FALSE(keys->Matches("x" + key)) << key;
    EXPECT_FALSE(keys->Authorizes(key)) << "no scheme: " << key;
    EXPECT_FALSE(keys->Authorizes("Basic " + key)) << key;
  }
  EXPECT_FALSE(keys->Matches(""));
  EXPECT_FALSE(keys->Matches("k"));
  EXPECT_FALSE(keys->Matches("KEY-ONE-0123456789"));  // keys are case-sensitive
  EXPECT_FALSE(keys->Matches("key-one-0123456789k2"));
  EXPECT_FALSE(keys->Authorizes(""));
  EXPECT_FALSE(keys->Authorizes("Bearer "));
  EXPECT_FALSE(keys->Authorizes("Bearer k3"));
}

TEST(ApiKeys, FromKeysNeedsValidKeys) {
  EXPECT_FALSE(ApiKeys::FromKeys({}).ok());
  EXPECT_FALSE(ApiKeys::FromKeys({""}).ok());
  EXPECT_FALSE(ApiKeys::FromKeys({"has space"}).ok());
}

class ApiKeysLoad : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  const std::string dir_ = jetserve::testing::ScratchDir("api_keys_test");
};

TEST_F(ApiKeysLoad, FileAndEnvironmentKeysAreBothAccepted) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Load(Write("keys", "# ops\nfrom-file\n"), "from-env");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_TRUE(keys->Matches("from-file"));
  EXPECT_TRUE(keys->Matches("from-env"));
  EXPECT_FALSE(keys->Matches("# ops"));
}

TEST_F(ApiKeysLoad, ErrorsNameTheSourceButNotTheContent) {
  absl::StatusOr<ApiKeys> empty = ApiKeys::Load(Write("empty", "# only a comment\n"), nullptr);
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("no keys"));

  absl::StatusOr<ApiKeys> missing = ApiKeys::Load(dir_ + "/nope", nullptr);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("--api-key-file"));

  absl::StatusOr<ApiKeys> env_empty = ApiKeys::Load("", "");
  ASSERT_FALSE(env_empty.ok());
  EXPECT_THAT(std::string(env_empty.status().message()), HasSubstr(kApiKeyEnvVar));

  absl::StatusOr<ApiKeys> env_bad = ApiKeys::Load("", "two words-secret");
  ASSERT_FALSE(env_bad.ok());
  EXPECT_THAT(std::string(env_bad.status().message()), Not(HasSubstr("secret")));

  EXPECT_FALSE(ApiKeys::Load("", nullptr).ok());  // nothing configured is not "no keys needed"
}

}  // namespace
}  // namespace jetserve
