// Writes random-weight checkpoints in exactly the HuggingFace layout, for tests, benchmarks and
// the embedded default model. Deterministic for a given config and seed.
#ifndef JETSERVE_ENGINE_CHECKPOINT_CHECKPOINT_WRITER_H_
#define JETSERVE_ENGINE_CHECKPOINT_CHECKPOINT_WRITER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace jetserve {

struct RandomCheckpointOptions {
  std::string config_path;  // config.json to use (copied to out_dir)
  std::string config_json;  // used instead when config_path is empty
  std::string out_dir;      // created if missing
  uint64_t seed = 0;
  std::string tokenizer_dir;                   // optional: tokenizer.json etc. copied in when set
  int64_t max_shard_bytes = int64_t{2} << 30;  // above this, shards + index.json
};

absl::Status WriteRandomCheckpoint(const RandomCheckpointOptions& options);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CHECKPOINT_CHECKPOINT_WRITER_H_
