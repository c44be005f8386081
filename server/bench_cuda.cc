// `jetserve bench --device cuda` (see bench_cuda.h). Caches start zeroed (timing does not
// depend on their contents); decode steps sample greedily on the device and copy back only the
// ids.
#include "server/bench_cuda.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/cuda_backend.h"
#include "engine/device.h"
#include "engine/memory/hybrid_memory.h"
#include "engine/model.h"
#ifdef JETSERVE_HAVE_CUDA
#include "engine/cuda_step_meta.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/ops.h"
#endif
#include "nlohmann/json.hpp"
#include "server/bench_util.h"
#include "server/cli_args.h"

namespace jetserve {

#ifdef JETSERVE_HAVE_CUDA
int RunCudaBench(const BenchOptions& o) {
  using nlohmann::json;
  auto copy_bw = kernels::cuda::MeasureCopyBandwidth(int64_t{1} << 30, 10);
  if (!copy_bw.ok()) return ReportFailure("bench", copy_bw.status());
  auto loaded = Model::Load(o.model_dir);
  if (!loaded.ok()) return ReportFailure("bench", loaded.status());
  Model& model = **loaded;
  if (absl::Status s = UseDevice(model, "cuda"); !s.ok()) return ReportFailure("bench", s);
  auto* backend = dynamic_cast<CudaBackend*>(model.backend());
  const ModelConfig& c = model.config();
  auto info = kernels::cuda::OpenDevice(0);
  if (!info.ok()) return ReportFailure("bench", info.status());

  // Device bytes one sequence holds at `end` positions (bf16 KV and rings, fp32 state).
  const int64_t profiled_steps = o.profile ? 2 : 0;
  const int64_t end = o.context + o.gen * o.runs + profiled_steps + 1;
  if (c.max_position_embeddings > 0 && end > c.max_position_embeddings) {
    return ReportFailure(
        "bench",
        absl::InvalidArgumentError(absl::StrCat(
            "--context ", o.context, " plus the generated tokens (", end - o.context,
            ") exceeds the model's max_position_embeddings (", c.max_position_embeddings, ")")));
  }
  const double kv_bytes = static_cast<double>(backend->kv_element_bytes());
  const CacheCost cost = CacheCostOf(c, kv_bytes);
  const int64_t page = cost.page_size;
  const double per_seq_cache = cost.BytesAt(end);
  // Step workspace per sequence: logits and the sampler's scratch dominate.
  const double per_seq = per_seq_cache + 8.0 * c.vocab_size + 64.0 * c.intermediate_size;
  int64_t batch = o.batch;
  if (o.batch_auto) {
    const double room = 0.9 * static_cast<double>(info->free_bytes) - (1 << 30);
    auto fitting = [&](double bytes_per_seq) {
      return std::clamp<int64_t>(static_cast<int64_t>(room / bytes_per_seq), 1, 4096);
    };
    // Plus the attention split-K workspace, which grows with the batch (decode: one row per
    // sequence and at least context / 1024 splits; ~400 KB a sequence at 64K for the 2B model).
    // Its split count depends on the batch, so size the batch once without it, then again.
    const kernels::cuda::AttnShapeDev shape{c.num_attention_heads, c.num_key_value_heads,
                                            c.head_dim};
    // The count the backend runs with (rounded for its decode graphs).
    const int64_t splits = GraphSplitCount(
        kernels::cuda::ChooseAttentionSplits(fitting(per_seq), 1, end, shape, info->sm_count));
    batch = fitting(per_seq + 4.0 * kernels::cuda::AttentionWorkspaceFloats(1, shape, splits));
  }
  MemoryOptions mem;
  mem.max_seqs = batch + 1;  // + the prefill sequence
  mem.page_size = page;
  mem.kv_blocks = (batch + 1) * ((end + page - 1) / page);
  mem.host_storage = false;
  mem.kv_element_bytes = backend->kv_element_bytes();
  auto memory = HybridMemory::Create(c, mem);
  if (!memory.ok()) return ReportFailure("bench", memory.status());
  if (absl::Status s = model.AttachMemory(**memory); !s.ok()) return ReportFailure("bench", s);

  json out;
  out["device"] = {{"name", backend->device_name()},
                   {"sm_count", backend->sm_count()},
                   {"block_tables", backend->incremental_tables() ? "incremental" : "whole"},
                   {"copy_GBps", *copy_bw},
                   {"peak_theoretical_GBps", info->peak_bandwidth_gbs},
                   {"weight_bytes", backend->weight_bytes()},
                   {"pool_bytes", backend->pool_bytes()}};
  // The JETSERVE_CUDA_* switches this run had (the paths that are off by default until
  // measured: tests/gpu/README.md), so that a result says what it measured.
  json switches = json::object();
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (kv.rfind("JETSERVE_CUDA_", 0) == 0 && eq != std::string::npos) {
      switches[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  }
  out["device"]["switches"] = switches;
  out["model"] = {{"dir", o.model_dir}, {"hidden_size", c.hidden_size}};
  std::vector<int32_t> ids;

  // Prompt tokens [at, at + n) of `seq`, one forward call.
  auto prefill_chunk = [&](SequenceMemory& seq, int64_t at, int64_t n) {
    ForwardBatch b;
    for (int64_t i = 0; i < n; ++i) b.token_ids.push_back(static_cast<int32_t>((at + i) % 1000));
    b.seqs.push_back({&seq, at, n, false});
    return backend->ForwardGreedy(b, **memory, &ids);
  };

  // Prefill: one sequence, prompt in chunks.
  if (o.prompt_tokens > 0) {
    SequenceMemory seq;
    const int64_t p = std::min(o.prompt_tokens, end);
    (*memory)->Reserve(seq, p);
    const double t0 = NowSeconds();
    for (int64_t at = 0; at < p; at += o.prefill_chunk) {
      const int64_t n = std::min(o.prefill_chunk, p - at);
      if (absl::Status s = prefill_chunk(seq, at, n); !s.ok()) return ReportFailure("bench", s);
    }
    const double secs = NowSeconds() - t0;
    out["prefill"] = {{"tokens", p}, {"seconds", secs}, {"tokens_per_s", p / secs}};
    (*memory)->Release(seq);
  }

  std::vector<SequenceMemory> seqs(batch);
  for (SequenceMemory& s : seqs) (*memory)->Reserve(s, end);
  // Bytes a decode step must move: every weight once (the embedding table only for the rows it
  // gathers, unless tied to the LM head), each sequence's jet state read and written, its swa
  // window and attn KV read.
  const double weights = static_cast<double>(backend->weight_bytes());
  const double cache_step = CacheTrafficPerStep(c, o.context, kv_bytes);
  const double step_bytes = weights + batch * cache_step;
  std::vector<double> run_secs;
  std::vector<int32_t> next(batch, 1);
  // One greedy decode step of every sequence at `position`.
  auto decode_step = [&](int64_t position) {
    ForwardBatch b;
    b.token_ids = next;
    for (int64_t i = 0; i < batch; ++i) b.seqs.push_back({&seqs[i], position, 1, false});
    return backend->ForwardGreedy(b, **memory, &next);
  };
  for (int64_t r = 0; r < o.runs; ++r) {
    const double t0 = NowSeconds();
    for (int64_t g = 0; g < o.gen; ++g) {
      if (absl::Status s = decode_step(o.context + r * o.gen + g); !s.ok())
        return ReportFailure("bench", s);
    }
    run_secs.push_back(NowSeconds() - t0);
  }
  std::vector<double> sorted = run_secs;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  const double step_s = median / o.gen;
  const double achieved = step_bytes / step_s / 1e9;
  out["decode"] = {{"batch", batch},
                   {"batch_auto", o.batch_auto},
                   {"context", o.context},
                   {"gen", o.gen},
                   {"run_seconds", run_secs},
                   {"step_ms", step_s * 1e3},
                   {"tokens_per_s", batch / step_s},
                   {"bytes_per_step", step_bytes},
                   {"weight_bytes_per_step", weights},
                   {"cache_bytes_per_step", batch * cache_step},
                   {"achieved_GBps", achieved},
                   // The copy probe counts bytes read + written, as step_bytes does.
                   {"fraction_of_copy_bandwidth", achieved / *copy_bw}};
  if (o.profile) {
    // Milliseconds per group and step; the groups' sum is the step without graph replay.
    auto profile_json = [&]() {
      int64_t steps = 0;
      std::map<std::string, double> ms = backend->TakeProfile(&steps);
      json groups = json::object();
      double total = 0;
      for (const auto& [label, v] : ms) {
        const double per_step = v / std::max<int64_t>(steps, 1);
        groups[label] = per_step;
        total += per_step;
      }
      return json{{"steps", steps}, {"total_ms", total}, {"ms", groups}};
    };
    backend->SetProfiling(true);
    for (int64_t g = 0; g < profiled_steps; ++g) {
      if (absl::Status s = decode_step(o.context + o.runs * o.gen + g); !s.ok())
        return ReportFailure("bench", s);
    }
    out["decode_profile"] = profile_json();
    if (o.prompt_tokens > 0) {
      // One prefill chunk of a fresh sequence (the prefill's own sequence was released).
      SequenceMemory seq;
      const int64_t n = std::min({o.prompt_tokens, o.prefill_chunk, end});
      (*memory)->Reserve(seq, n);
      if (absl::Status s = prefill_chunk(seq, 0, n); !s.ok()) return ReportFailure("bench", s);
      out["prefill_profile"] = profile_json();
      out["prefill_profile"]["tokens"] = n;
      (*memory)->Release(seq);
    }
    backend->SetProfiling(false);
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}
#else
int RunCudaBench(const BenchOptions&) {
  return ReportFailure(
      "bench",
      absl::UnimplementedError(
          "this jetserve was built without CUDA (configure with -DJETSERVE_CUDA=ON and nvcc)"));
}
#endif

}  // namespace jetserve
