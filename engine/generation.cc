#include "engine/generation.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace jetserve {

std::vector<int32_t> DefaultStopTokenIds(const Model& model) {
  std::vector<int32_t> ids(model.config().eos_token_ids.begin(),
                           model.config().eos_token_ids.end());
  const std::filesystem::path path =
      std::filesystem::path(model.checkpoint().dir()) / "generation_config.json";
  std::ifstream in(path);
  if (!in) return ids;
  // A malformed generation_config.json only loses its extra stop ids; config.json's remain.
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("eos_token_id")) return ids;
  const nlohmann::json& eos = j["eos_token_id"];
  std::vector<nlohmann::json> values = eos.is_array()
                                           ? std::vector<nlohmann::json>(eos.begin(), eos.end())
                                           : std::vector<nlohmann::json>{eos};
  for (const nlohmann::json& v : values) {
    if (!v.is_number_integer()) continue;
    const int32_t id = v.get<int32_t>();
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::unique_ptr<HybridMemory>> MemoryForContext(const ModelConfig& config,
                                                               int64_t max_seqs,
                                                               int64_t max_context) {
  MemoryOptions options;
  options.max_seqs = max_seqs;
  options.kv_blocks = max_seqs * ((max_context + options.page_size - 1) / options.page_size);
  return HybridMemory::Create(config, options);
}

absl::StatusOr<FinishReason> GenerateOne(Model& model, HybridMemory& memory,
                                         const std::vector<int32_t>& prompt,
                                         const GenerationOptions& options,
                                         const std::function<void(const SampledToken&)>& on_token) {
  const ModelConfig& config = model.config();
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  const int64_t context = config.max_position_embeddings;
  if (static_cast<int64_t>(prompt.size()) >= context) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt.size(),
                                                   " tokens; the model's context is ", context));
  }
  if (options.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be >= 1");
  const int64_t end = std::min<int64_t>(context, prompt.size() + options.max_tokens);

  SequenceMemory seq;
  if (!memory.CanReserve(seq, end)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("not enough cache memory for ", end, " positions"));
  }
  memory.Reserve(seq, end);
  struct ReleaseOnExit {
    HybridMemory& m;
    SequenceMemory& s;
    ~ReleaseOnExit() { m.Release(s); }
  } release{memory, seq};

  std::vector<float> logits;
  Sampler sampler;
  Rng rng(options.sampling.seed);
  ForwardBatch batch;
  batch.seqs.resize(1);
  batch.seqs[0].memory = &seq;
  int64_t position = 0;
  // Prefill in chunks; only the last chunk's final logits matter.
  while (position < static_cast<int64_t>(prompt.size())) {
    const int64_t n =
        std::min<int64_t>(options.prefill_chunk, static_cast<int64_t>(prompt.size()) - position);
    batch.token_ids.assign(prompt.begin() + position, prompt.begin() + position + n);
    batch.seqs[0].start_position = position;
    batch.seqs[0].num_tokens = n;
    RETURN_IF_ERROR(model.Forward(batch, memory, &logits));
    position += n;
  }
  for (int32_t generated = 0;;) {
    // Penalties and bans need a sequence's history: the engine applies them; this plain
    // driver samples from the model's distribution alone.
    const SampledToken token =
        sampler.Sample(logits.data(), config.vocab_size, options.sampling, {}, rng);
    on_token(token);
    ++generated;
    if (std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), token.id) !=
        options.stop_token_ids.end()) {
      return FinishReason::kStop;
    }
    // `position` tokens are cached and the one just sampled would be fed at index `position`;
    // another token after it would sit at position + 1, which must be inside the context.
    if (generated >= options.max_tokens || position + 1 >= context) return FinishReason::kLength;
    batch.token_ids.assign(1, token.id);
    batch.seqs[0].start_position = position;
    batch.seqs[0].num_tokens = 1;
    RETURN_IF_ERROR(model.Forward(batch, memory, &logits));
    ++position;
  }
}

}  // namespace jetserve
