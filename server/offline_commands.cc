// The commands that run the engine in-process: make-checkpoint, tokenize, generate.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/checkpoint_writer.h"
#include "engine/generation.h"
#include "engine/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/cli_args.h"
#include "server/commands.h"
#include "server/model_location.h"

namespace jetserve {
namespace {

int UsageError(const std::string& command, const absl::Status& status, const CliArgs& args) {
  std::cerr << "jetserve " << command << ": " << status.message() << "\n\nflags:\n" << args.Usage();
  return 2;
}

int Fail(const std::string& command, const absl::Status& status) {
  std::cerr << "jetserve " << command << ": " << status.message() << "\n";
  return 1;
}

// JSON text for a string that may hold invalid UTF-8 (it is replaced, never thrown on).
std::string JsonDump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool WantsHelp(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") return true;
  }
  return false;
}

}  // namespace

int RunMakeCheckpoint(int argc, char** argv) {
  const std::string cmd = "make-checkpoint";
  CliArgs args;
  args.AddValue("config", "config.json to build a checkpoint for (required)");
  args.AddValue("out", "output directory (required)");
  args.AddValue("seed", "random seed", "0");
  args.AddValue("tokenizer", "directory whose tokenizer files are copied in");
  args.AddValue("max-shard-bytes", "split weights into shards above this size", "2147483648");
  if (WantsHelp(argc, argv)) {
    std::cout << "usage: jetserve make-checkpoint --config FILE --out DIR [--seed N]\n"
              << "writes a random-weight bf16 checkpoint in HuggingFace layout\n\n"
              << args.Usage();
    return 0;
  }
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok()) return UsageError(cmd, s, args);
  if (!args.Has("config") || !args.Has("out")) {
    return UsageError(cmd, absl::InvalidArgumentError("--config and --out are required"), args);
  }
  auto seed = args.GetInt("seed", 0, INT64_MAX);
  if (!seed.ok()) return UsageError(cmd, seed.status(), args);
  auto shard = args.GetInt("max-shard-bytes", 1, INT64_MAX);
  if (!shard.ok()) return UsageError(cmd, shard.status(), args);
  RandomCheckpointOptions options;
  options.config_path = args.Get("config");
  options.out_dir = args.Get("out");
  options.seed = static_cast<uint64_t>(*seed);
  options.tokenizer_dir = args.Get("tokenizer");
  options.max_shard_bytes = *shard;
  if (absl::Status s = WriteRandomCheckpoint(options); !s.ok()) return Fail(cmd, s);
  return 0;
}

int RunTokenize(int argc, char** argv) {
  const std::string cmd = "tokenize";
  CliArgs args;
  args.AddValue("model", "checkpoint directory holding tokenizer.json (default: embedded model)");
  args.AddBool("allow-special", "honour special-token text such as <|im_end|>");
  if (WantsHelp(argc, argv)) {
    std::cout << "usage: jetserve tokenize [--model DIR] [--allow-special] < text\n"
              << "prints the token ids of stdin as a JSON array\n\n"
              << args.Usage();
    return 0;
  }
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok()) return UsageError(cmd, s, args);
  auto dir = ResolveModelDir(args.Get("model"));
  if (!dir.ok()) return Fail(cmd, dir.status());
  auto tokenizer = Tokenizer::LoadFromDir(*dir);
  if (!tokenizer.ok()) return Fail(cmd, tokenizer.status());
  const std::string text((std::istreambuf_iterator<char>(std::cin)),
                         std::istreambuf_iterator<char>());
  auto ids = (*tokenizer)->Encode(text, args.GetBool("allow-special"));
  if (!ids.ok()) return Fail(cmd, ids.status());
  std::cout << nlohmann::json(*ids).dump() << "\n";
  return 0;
}

int RunGenerate(int argc, char** argv) {
  const std::string cmd = "generate";
  CliArgs args;
  args.AddValue("model", "checkpoint directory (default: the embedded random-weight model)");
  args.AddValue("prompt", "prompt text");
  args.AddValue("prompt-ids", "prompt as comma-separated token ids, e.g. 1,2,3");
  args.AddValue("max-tokens", "tokens to generate at most", "16");
  args.AddValue("temperature", "sampling temperature; 0 is greedy", "0");
  args.AddValue("top-p", "nucleus sampling: keep the smallest set with this probability", "1");
  args.AddValue("top-k", "keep the k most likely tokens (0: all)", "0");
  args.AddValue("seed", "random seed for sampling", "0");
  args.AddValue("logprobs", "report the top K log-probabilities per token", "0");
  args.AddValue("prefill-chunk", "prompt tokens per forward step", "512");
  args.AddBool("allow-special", "honour special-token text in --prompt");
  args.AddBool("json", "one JSON object per token, then a final object with usage");
  if (WantsHelp(argc, argv)) {
    std::cout
        << "usage: jetserve generate [--model DIR] (--prompt TEXT | --prompt-ids 1,2,3) ...\n\n"
        << args.Usage();
    return 0;
  }
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok()) return UsageError(cmd, s, args);
  if (args.Has("prompt") == args.Has("prompt-ids")) {
    return UsageError(
        cmd, absl::InvalidArgumentError("give exactly one of --prompt and --prompt-ids"), args);
  }
  GenerationOptions options;
  {
    auto max_tokens = args.GetInt("max-tokens", 1, 1 << 24);
    auto top_k = args.GetInt("top-k", 0, INT32_MAX);
    auto seed = args.GetInt("seed", 0, INT64_MAX);
    auto logprobs = args.GetInt("logprobs", 0, 1 << 20);
    auto chunk = args.GetInt("prefill-chunk", 1, 1 << 20);
    auto temperature = args.GetDouble("temperature");
    auto top_p = args.GetDouble("top-p");
    for (const absl::Status& s :
         {max_tokens.status(), top_k.status(), seed.status(), logprobs.status(), chunk.status(),
          temperature.status(), top_p.status()}) {
      if (!s.ok()) return UsageError(cmd, s, args);
    }
    options.max_tokens = static_cast<int32_t>(*max_tokens);
    options.prefill_chunk = *chunk;
    options.sampling.temperature = static_cast<float>(*temperature);
    options.sampling.top_p = static_cast<float>(*top_p);
    options.sampling.top_k = static_cast<int32_t>(*top_k);
    options.sampling.seed = static_cast<uint64_t>(*seed);
    options.sampling.return_logprobs = *logprobs > 0;
    options.sampling.top_logprobs = static_cast<int32_t>(*logprobs);
  }
  auto dir = ResolveModelDir(args.Get("model"));
  if (!dir.ok()) return Fail(cmd, dir.status());
  const auto load_start = std::chrono::steady_clock::now();
  auto model = Model::Load(*dir);
  if (!model.ok()) return Fail(cmd, model.status());
  const ModelConfig& config = (*model)->config();
  if (absl::Status s = ValidateSamplingParams(options.sampling, config.vocab_size,
                                              config.vocab_size);
      !s.ok()) {
    return UsageError(cmd, s, args);
  }
  // With --prompt-ids a checkpoint without tokenizer.json still runs (random test checkpoints);
  // generated text is then left out and only ids are printed.
  std::unique_ptr<Tokenizer> tokenizer;
  if (args.Has("prompt") ||
      std::filesystem::exists(std::filesystem::path(*dir) / "tokenizer.json")) {
    auto loaded = Tokenizer::LoadFromDir(*dir);
    if (!loaded.ok()) return Fail(cmd, loaded.status());
    tokenizer = *std::move(loaded);
  }
  std::vector<int32_t> prompt;
  if (args.Has("prompt")) {
    auto ids = tokenizer->Encode(args.Get("prompt"), args.GetBool("allow-special"));
    if (!ids.ok()) return UsageError(cmd, ids.status(), args);
    prompt = *std::move(ids);
  } else {
    auto ids = args.GetIntList("prompt-ids");
    if (!ids.ok()) return UsageError(cmd, ids.status(), args);
    prompt = *std::move(ids);
    for (int32_t id : prompt) {
      if (id < 0 || id >= config.vocab_size) {
        return UsageError(cmd,
                          absl::InvalidArgumentError(absl::StrCat("--prompt-ids: token id ", id,
                                                                  " is outside the vocabulary [0, ",
                                                                  config.vocab_size, ")")),
                          args);
      }
    }
  }
  if (prompt.empty())
    return UsageError(cmd, absl::InvalidArgumentError("the prompt is empty"), args);
  options.stop_token_ids = DefaultStopTokenIds(**model);
  const int64_t context = std::min<int64_t>(
      config.max_position_embeddings, static_cast<int64_t>(prompt.size()) + options.max_tokens);
  auto memory = MemoryForContext(config, 1, context);
  if (!memory.ok()) return Fail(cmd, memory.status());
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  const bool json = args.GetBool("json");
  std::optional<IncrementalDetokenizer> detok;
  if (tokenizer != nullptr) detok.emplace(tokenizer.get(), /*skip_special=*/false);
  int64_t completion_tokens = 0;
  const auto gen_start = std::chrono::steady_clock::now();
  auto finish = GenerateOne(**model, **memory, prompt, options, [&](const SampledToken& t) {
    ++completion_tokens;
    const std::string text = detok ? detok->Add(t.id) : "";
    if (json) {
      nlohmann::json j = {{"id", t.id}};
      if (detok) j["text"] = text;
      if (options.sampling.return_logprobs) {
        nlohmann::json top = nlohmann::json::array();
        for (const auto& [id, lp] : t.top) top.push_back({id, lp});
        j["logprobs"] = top;
      }
      std::cout << JsonDump(j) << "\n" << std::flush;
    } else {
      std::cout << (detok ? text : absl::StrCat(t.id, " ")) << std::flush;
    }
  });
  if (!finish.ok()) return Fail(cmd, finish.status());
  const double gen_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - gen_start).count();
  const std::string rest = detok ? detok->Flush() : "";
  if (json) {
    if (!rest.empty()) std::cout << JsonDump({{"text", rest}}) << "\n";
    nlohmann::json final = {
        {"finish_reason", std::string(FinishReasonName(*finish))},
        {"usage",
         {{"prompt_tokens", prompt.size()},
          {"completion_tokens", completion_tokens},
          {"total_tokens", static_cast<int64_t>(prompt.size()) + completion_tokens}}},
        {"timing",
         {{"load_seconds", load_seconds},
          {"generate_seconds", gen_seconds},
          {"tokens_per_second", completion_tokens / std::max(gen_seconds, 1e-9)}}}};
    std::cout << JsonDump(final) << "\n";
  } else {
    std::cout << rest << "\n";
  }
  return 0;
}

}  // namespace jetserve
