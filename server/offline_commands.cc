// The commands that run the engine in-process: make-checkpoint, tokenize, generate.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/checkpoint/checkpoint_writer.h"
#include "engine/device.h"
#include "engine/engine.h"
#include "engine/generation.h"
#include "engine/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/cli_args.h"
#include "server/commands.h"
#include "server/model_location.h"

namespace jetserve {
namespace {

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
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok()) return ReportUsageError(cmd, s, args);
  if (!args.Has("config") || !args.Has("out")) {
    return ReportUsageError(cmd, absl::InvalidArgumentError("--config and --out are required"),
                            args);
  }
  auto seed = args.GetInt("seed", 0, INT64_MAX);
  if (!seed.ok()) return ReportUsageError(cmd, seed.status(), args);
  auto shard = args.GetInt("max-shard-bytes", 1, INT64_MAX);
  if (!shard.ok()) return ReportUsageError(cmd, shard.status(), args);
  RandomCheckpointOptions options;
  options.config_path = args.Get("config");
  options.out_dir = args.Get("out");
  options.seed = static_cast<uint64_t>(*seed);
  options.tokenizer_dir = args.Get("tokenizer");
  options.max_shard_bytes = *shard;
  if (absl::Status s = WriteRandomCheckpoint(options); !s.ok()) return ReportFailure(cmd, s);
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
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok()) return ReportUsageError(cmd, s, args);
  auto dir = ResolveModelDir(args);
  if (!dir.ok()) return ReportFailure(cmd, dir.status());
  auto tokenizer = Tokenizer::LoadFromDir(*dir);
  if (!tokenizer.ok()) return ReportFailure(cmd, tokenizer.status());
  const std::string text((std::istreambuf_iterator<char>(std::cin)),
                         std::istreambuf_iterator<char>());
  auto ids = (*tokenizer)->Encode(text, args.GetBool("allow-special"));
  if (!ids.ok()) return ReportFailure(cmd, ids.status());
  std::cout << nlohmann::json(*ids).dump() << "\n";
  return 0;
}

int RunGenerate(int argc, char** argv) {
  const std::string cmd = "generate";
  CliArgs args;
  args.AddValue("model", "checkpoint directory (default: the embedded random-weight model)");
  args.AddValue("prompt", "prompt text");
  args.AddValue("prompt-ids", "prompt as comma-separated token ids, e.g. 1,2,3");
  args.AddValue("messages",
                "a conversation as JSON, [{\"role\": \"user\", \"content\": \"...\"}, ...], "
                "turned into the prompt by the model's chat template");
  args.AddValue("device",
                "where the model runs: cpu; cuda (a CUDA build and a GPU); or null (no "
                "computation, meaningless tokens)",
                "cpu");
  args.AddValue("max-tokens", "tokens to generate at most", "16");
  args.AddValue("min-tokens", "no stop before this many tokens", "0");
  args.AddValue("n", "parallel samples sharing one prefill", "1");
  args.AddValue("temperature", "sampling temperature; 0 is greedy", "0");
  args.AddValue("top-p", "nucleus sampling: keep the smallest set with this probability", "1");
  args.AddValue("top-k", "keep the k most likely tokens (0: all)", "0");
  args.AddValue("min-p", "keep tokens at least this fraction of the most likely one's", "0");
  args.AddValue("repetition-penalty", "divide (multiply if < 0) seen tokens' logits by it", "1");
  args.AddValue("presence-penalty", "subtract from the logits of tokens already generated", "0");
  args.AddValue("frequency-penalty", "subtract per occurrence of a generated token", "0");
  args.AddValue("logit-bias", "biases as id:bias pairs, e.g. 13:-100,42:2.5");
  args.AddValue("stop", "a stop string, or a JSON list of them");
  args.AddValue("stop-token-ids", "token ids that end generation, e.g. 13,42");
  args.AddValue("seed", "random seed for sampling", "0");
  args.AddValue("logprobs", "report the top K log-probabilities per token", "0");
  args.AddBool("ignore-eos", "keep generating past end-of-sequence tokens");
  args.AddBool("include-stop-str-in-output", "keep the matched stop string in the text");
  args.AddBool("allow-special", "honour special-token text in --prompt");
  args.AddBool("json", "one JSON object per output, then a final object with usage");
  if (WantsHelp(argc, argv)) {
    std::cout << "usage: jetserve generate [--model DIR] (--prompt TEXT | --prompt-ids 1,2,3 | "
                 "--messages JSON) ...\n\n"
              << args.Usage();
    return 0;
  }
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok()) return ReportUsageError(cmd, s, args);
  if (args.Has("prompt") + args.Has("prompt-ids") + args.Has("messages") != 1) {
    return ReportUsageError(
        cmd,
        absl::InvalidArgumentError("give exactly one of --prompt, --prompt-ids and --messages"),
        args);
  }
  EngineRequest request;
  {
    auto max_tokens = args.GetInt("max-tokens", 1, 1 << 24);
    auto min_tokens = args.GetInt("min-tokens", 0, 1 << 24);
    auto n = args.GetInt("n", 1, 1024);
    auto top_k = args.GetInt("top-k", 0, INT32_MAX);
    auto seed = args.GetInt("seed", 0, INT64_MAX);
    auto logprobs = args.GetInt("logprobs", 0, 1 << 20);
    for (const absl::Status& s : {max_tokens.status(), min_tokens.status(), n.status(),
                                  top_k.status(), seed.status(), logprobs.status()}) {
      if (!s.ok()) return ReportUsageError(cmd, s, args);
    }
    request.max_tokens = static_cast<int32_t>(*max_tokens);
    request.min_tokens = static_cast<int32_t>(*min_tokens);
    request.n = static_cast<int32_t>(*n);
    SamplingParams& p = request.sampling;
    p.top_k = static_cast<int32_t>(*top_k);
    p.seed = static_cast<uint64_t>(*seed);
    p.return_logprobs = *logprobs > 0;
    p.top_logprobs = static_cast<int32_t>(*logprobs);
    for (auto [flag, out] : std::initializer_list<std::pair<const char*, float*>>{
             {"temperature", &p.temperature},
             {"top-p", &p.top_p},
             {"min-p", &p.min_p},
             {"repetition-penalty", &p.repetition_penalty},
             {"presence-penalty", &p.presence_penalty},
             {"frequency-penalty", &p.frequency_penalty}}) {
      auto v = args.GetDouble(flag);
      if (!v.ok()) return ReportUsageError(cmd, v.status(), args);
      *out = static_cast<float>(*v);
    }
    if (args.Has("logit-bias")) {
      const std::vector<std::string> pairs = absl::StrSplit(args.Get("logit-bias"), ',');
      for (const std::string& pair : pairs) {
        const size_t colon = pair.find(':');
        int32_t id = 0;
        double bias = 0;
        if (colon == std::string::npos || !absl::SimpleAtoi(pair.substr(0, colon), &id) ||
            !absl::SimpleAtod(pair.substr(colon + 1), &bias)) {
          return ReportUsageError(
              cmd,
              absl::InvalidArgumentError(absl::StrCat("--logit-bias: '", pair, "' is not id:bias")),
              args);
        }
        p.logit_bias.emplace_back(id, static_cast<float>(bias));
      }
    }
    if (args.Has("stop")) {
      const std::string stop = args.Get("stop");
      const nlohmann::json list = nlohmann::json::parse(stop, nullptr, false);
      if (!stop.empty() && stop[0] == '[' && list.is_array()) {
        for (const auto& s : list) {
          if (!s.is_string()) {
            return ReportUsageError(
                cmd, absl::InvalidArgumentError("--stop: the JSON list must hold strings"), args);
          }
          request.stop.push_back(s.get<std::string>());
        }
      } else {
        request.stop.push_back(stop);
      }
    }
    if (args.Has("stop-token-ids")) {
      auto ids = args.GetIntList("stop-token-ids");
      if (!ids.ok()) return ReportUsageError(cmd, ids.status(), args);
      request.stop_token_ids = *std::move(ids);
    }
    request.ignore_eos = args.GetBool("ignore-eos");
    request.include_stop_str_in_output = args.GetBool("include-stop-str-in-output");
    request.skip_special_tokens = false;  // show everything the model wrote
    request.allow_special = args.GetBool("allow-special");
  }
  if (args.Has("prompt")) {
    request.prompt_text = args.Get("prompt");
  } else if (args.Has("prompt-ids")) {
    auto ids = args.GetIntList("prompt-ids");
    if (!ids.ok()) return ReportUsageError(cmd, ids.status(), args);
    request.prompt_ids = *std::move(ids);
    if (request.prompt_ids.empty()) {
      return ReportUsageError(cmd, absl::InvalidArgumentError("the prompt is empty"), args);
    }
  } else {
    const nlohmann::json messages = nlohmann::json::parse(args.Get("messages"), nullptr, false);
    if (!messages.is_array()) {
      return ReportUsageError(cmd, absl::InvalidArgumentError("--messages: expected a JSON list"),
                              args);
    }
    for (const auto& m : messages) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string()) {
        return ReportUsageError(
            cmd,
            absl::InvalidArgumentError("--messages: each message needs string role and content"),
            args);
      }
      request.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
  }

  auto dir = ResolveModelDir(args);
  if (!dir.ok()) return ReportFailure(cmd, dir.status());
  const auto load_start = std::chrono::steady_clock::now();
  auto model = Model::Load(*dir);
  if (!model.ok()) return ReportFailure(cmd, model.status());
  if (absl::Status s = UseDevice(**model, args.Get("device")); !s.ok())
    return ReportFailure(cmd, s);
  // A checkpoint without tokenizer.json (random test checkpoints) still runs from token ids:
  // the engine gets the byte-level tokenizer, and only ids are printed.
  const bool has_tokenizer =
      std::filesystem::exists(std::filesystem::path(*dir) / "tokenizer.json");
  if (!has_tokenizer && !args.Has("prompt-ids")) {
    return ReportFailure(
        cmd, absl::FailedPreconditionError(
                 absl::StrCat(*dir, " has no tokenizer.json: give the prompt as --prompt-ids")));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer;
  if (has_tokenizer) {
    tokenizer = LoadCheckpointTokenizer(*dir, (*model)->config());
  } else {
    const std::string tmp =
        (std::filesystem::temp_directory_path() / absl::StrCat("jetserve-generate-", getpid()))
            .string();
    if (absl::Status s = WriteByteLevelTokenizer(tmp); !s.ok()) return ReportFailure(cmd, s);
    tokenizer = Tokenizer::LoadFromDir(tmp);
    std::filesystem::remove_all(tmp);
  }
  if (!tokenizer.ok()) return ReportFailure(cmd, tokenizer.status());
  const ModelConfig& config = (*model)->config();
  EngineOptions options;
  options.max_seqs = std::max(1, request.n);
  options.max_n = std::max(1, request.n);
  options.max_logprobs = config.vocab_size;
  options.max_queue = 1;
  options.memory_bytes = int64_t{1} << 30;
  auto engine = Engine::Create(*std::move(model), *std::move(tokenizer), options, nullptr);
  if (!engine.ok()) return ReportFailure(cmd, engine.status());
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  // Outputs arrive on the engine's thread; this thread prints them.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<RequestOutput> outputs;
  bool done = false;
  const auto gen_start = std::chrono::steady_clock::now();
  auto id = (*engine)->Submit(request, [&](RequestOutput out) {
    std::lock_guard<std::mutex> lock(mu);
    done = out.request_finished;
    outputs.push_back(std::move(out));
    cv.notify_all();
  });
  if (!id.ok()) {
    return id.status().code() == absl::StatusCode::kInvalidArgument
               ? ReportUsageError(cmd, id.status(), args)
               : ReportFailure(cmd, id.status());
  }
  const bool json = args.GetBool("json");
  const bool many = request.n > 1;
  std::vector<std::string> texts(request.n);
  nlohmann::json choices = nlohmann::json::array();
  int64_t prompt_tokens = 0, completion_tokens = 0;
  absl::Status failure;
  for (bool finished = false; !finished;) {
    std::deque<RequestOutput> batch;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !outputs.empty(); });
      batch.swap(outputs);
      finished = done && outputs.empty();
    }
    for (const RequestOutput& out : batch) {
      const std::string text = has_tokenizer ? out.text : "";
      if (json) {
        for (size_t i = 0; i < out.token_ids.size(); ++i) {
          nlohmann::json j = {{"id", out.token_ids[i]}, {"index", out.index}};
          if (request.sampling.return_logprobs && i < out.logprobs.size()) {
            nlohmann::json top = nlohmann::json::array();
            for (const auto& [tid, lp] : out.logprobs[i].top) top.push_back({tid, lp});
            j["logprobs"] = top;
          }
          if (i + 1 == out.token_ids.size() && has_tokenizer) j["text"] = text;
          std::cout << JsonDump(j) << "\n";
        }
        if (out.token_ids.empty() && !text.empty()) {
          std::cout << JsonDump({{"text", text}, {"index", out.index}}) << "\n";
        }
      } else if (many) {
        texts[out.index] += has_tokenizer ? text : "";
        if (!has_tokenizer) {
          for (int32_t t : out.token_ids) absl::StrAppend(&texts[out.index], t, " ");
        }
      } else if (has_tokenizer) {
        std::cout << text;
      } else {
        for (int32_t t : out.token_ids) std::cout << t << " ";
      }
      std::cout << std::flush;
      if (out.finished) {
        if (!out.status.ok() && failure.ok()) failure = out.status;
        prompt_tokens = out.prompt_tokens;
        completion_tokens += out.completion_tokens;
        choices.push_back({{"index", out.index},
                           {"finish_reason", std::string(FinishReasonName(out.finish_reason))},
                           {"completion_tokens", out.completion_tokens}});
      }
    }
  }
  (*engine)->Shutdown(std::chrono::milliseconds(0));
  if (!failure.ok()) return ReportFailure(cmd, failure);
  const double gen_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - gen_start).count();
  if (json) {
    std::sort(choices.begin(), choices.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
      return a["index"] < b["index"];
    });
    nlohmann::json final = {
        {"finish_reason", choices[0]["finish_reason"]},
        {"choices", choices},
        {"usage",
         {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}}},
        {"timing",
         {{"load_seconds", load_seconds},
          {"generate_seconds", gen_seconds},
          {"tokens_per_second", completion_tokens / std::max(gen_seconds, 1e-9)}}}};
    std::cout << JsonDump(final) << "\n";
  } else if (many) {
    for (int32_t i = 0; i < request.n; ++i)
      std::cout << "[choice " << i << "]\n" << texts[i] << "\n";
  } else {
    std::cout << "\n";
  }
  return 0;
}

}  // namespace jetserve
