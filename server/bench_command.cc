// `jetserve bench`: in-process throughput of the forward pass (prefill tokens/s, time to first
// token, decode tokens/s at a batch and context), measured beside this machine's limits (a
// STREAM-style bandwidth probe and a peak-FMA probe run in the same process), so every number
// comes with the fraction of the bound it reaches. See docs/performance.md.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/generation.h"
#include "engine/memory/hybrid_memory.h"
#include "engine/model.h"
#include "engine/status_macros.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/machine_probes.h"
#include "kernels/cpu/thread_pool.h"
#include "nlohmann/json.hpp"
#include "server/bench_cuda.h"
#include "server/bench_options.h"
#include "server/bench_util.h"
#include "server/cli_args.h"
#include "server/commands.h"
#include "server/model_location.h"

namespace jetserve {
namespace {

namespace kc = kernels::cpu;
using nlohmann::json;

// FLOPs of attention and the jet recurrence for `tokens` new tokens ending at `end` positions
// (the part of a step that is not a Linear).
double MixerFlops(const ModelConfig& c, int64_t start, int64_t tokens) {
  double flops = 0;
  const double qh = c.num_attention_heads, hd = c.head_dim;
  for (int64_t p = start; p < start + tokens; ++p) {
    const double seen = static_cast<double>(p + 1);
    flops += c.num_layers_of(LayerType::kAttn) * 4.0 * qh * hd * seen;
    flops += c.num_layers_of(LayerType::kSwa) * 4.0 * qh * hd *
             std::min<double>(seen, c.swa_window_size);
  }
  const JetConfig& j = c.jet;
  flops += c.num_layers_of(LayerType::kJet) * 8.0 * j.num_heads * j.head_dim * j.value_head_dim *
           static_cast<double>(tokens);
  return flops;
}

// User + system CPU seconds of the whole process so far (all threads).
double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

int64_t PeakRssBytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

// Deterministic values in [-0.5, 0.5) for cache contents: timing does not depend on them, but
// they must be ordinary floats (no NaN, no denormals).
void FillPseudoRandom(float* p, int64_t n, uint64_t seed, float scale = 1.0f) {
  kc::ThreadPool::Default().ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(b) * 0xBF58476D1CE4E5B9ull;
    for (int64_t i = b; i < e; ++i) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      p[i] = (static_cast<float>(s >> 40) * (1.0f / 16777216.0f) - 0.5f) * scale;
    }
  });
}

// Gives `seq` caches as if it had processed `context` tokens, without computing them.
void FillSyntheticContext(const ModelConfig& c, HybridMemory& memory, SequenceMemory& seq,
                          int64_t context, uint64_t seed) {
  if (StateSlotPool* slots = memory.state_slots(); slots != nullptr) {
    const StateSlotShape& sh = slots->shape();
    for (int64_t l = 0; l < sh.jet_layers; ++l) {
      // A small state: the real one is a decayed sum of outer products of unit vectors.
      float* state = slots->state(seq.state_slot, l);
      FillPseudoRandom(state, sh.state_floats(), seed + l, 0.1f);
      FillPseudoRandom(slots->conv_tail(seq.state_slot, l), sh.tail_floats(), seed + 500 + l);
    }
  }
  if (WindowRingPool* rings = memory.window_rings(); rings != nullptr) {
    for (int64_t l = 0; l < c.num_layers_of(LayerType::kSwa); ++l) {
      const int64_t n = rings->shape().side_floats();
      FillPseudoRandom(rings->keys(seq.window_ring, l), n, seed + 1000 + l);
      FillPseudoRandom(rings->values(seq.window_ring, l), n, seed + 2000 + l);
    }
  }
  if (PagedKvPool* kv = memory.paged_kv(); kv != nullptr) {
    const PagedKvShape& sh = kv->shape();
    const int64_t pages = (context + sh.page_size - 1) / sh.page_size;
    for (int64_t l = 0; l < sh.attn_layers; ++l) {
      for (int64_t i = 0; i < pages; ++i) {
        const int64_t block = seq.kv_blocks[i];
        FillPseudoRandom(kv->keys(l) + block * sh.side_floats(), sh.side_floats(),
                         seed + 3000 + l * 100003 + i);
        FillPseudoRandom(kv->values(l) + block * sh.side_floats(), sh.side_floats(),
                         seed + 5000 + l * 100003 + i);
      }
    }
  }
}

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

struct PrefillResult {
  std::vector<double> seconds;       // per run: all chunks through the first token's logits
  std::vector<double> gemm_seconds;  // per run: the Linear part
  std::vector<double> cpu_seconds;   // per run: CPU time of all threads
  ForwardProfile profile;            // of the last run
};

// `before_run` is called before each timed run (to probe the machine right then: on a shared
// machine its limits drift with what else runs).
absl::StatusOr<PrefillResult> MeasurePrefill(Model& model, const BenchOptions& o,
                                             const std::function<void()>& before_run) {
  const ModelConfig& c = model.config();
  ASSIGN_OR_RETURN(std::unique_ptr<HybridMemory> memory,
                   MemoryForContext(c, 1, o.prompt_tokens + 1));
  std::vector<int32_t> prompt(o.prompt_tokens);
  uint64_t s = o.seed + 17;
  for (int32_t& id : prompt) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(c.vocab_size));
  }
  PrefillResult result;
  std::vector<float> logits;
  ForwardBatch batch;
  batch.seqs.resize(1);
  for (int64_t run = 0; run < o.runs; ++run) {
    SequenceMemory seq;
    memory->Reserve(seq, o.prompt_tokens + 1);
    before_run();
    result.profile.Reset();
    model.set_profile(&result.profile);
    const double cpu_start = ProcessCpuSeconds();
    const double start = NowSeconds();
    for (int64_t pos = 0; pos < o.prompt_tokens; pos += o.prefill_chunk) {
      const int64_t n = std::min(o.prefill_chunk, o.prompt_tokens - pos);
      batch.token_ids.assign(prompt.begin() + pos, prompt.begin() + pos + n);
      batch.seqs[0] = BatchSequence{&seq, pos, n, false};
      if (absl::Status st = model.Forward(batch, *memory, &logits); !st.ok()) {
        model.set_profile(nullptr);
        return st;
      }
    }
    volatile int32_t first = Argmax(logits.data(), c.vocab_size);
    (void)first;
    result.seconds.push_back(NowSeconds() - start);
    result.cpu_seconds.push_back(ProcessCpuSeconds() - cpu_start);
    result.gemm_seconds.push_back(result.profile.linear_seconds);
    model.set_profile(nullptr);
    memory->Release(seq);
  }
  return result;
}

struct DecodeResult {
  std::vector<double> run_seconds;       // per run of `gen` steps
  std::vector<double> run_gemm_seconds;  // per run: the Linear part
  std::vector<double> run_cpu_seconds;   // per run: CPU time of all threads
  std::vector<double> step_seconds;      // every step of every run
  ForwardProfile profile;                // all runs
  double fill_seconds = 0;
  int64_t cache_pool_bytes = 0;
};

// Positions a decode measurement reaches: the context, every run's tokens and the warm-up step.
int64_t DecodeEnd(const BenchOptions& o) { return o.context + o.gen * o.runs + 2; }

absl::StatusOr<DecodeResult> MeasureDecode(Model& model, const BenchOptions& o, int64_t batch,
                                           const std::function<void()>& before_run) {
  const ModelConfig& c = model.config();
  const int64_t end = DecodeEnd(o);
  ASSIGN_OR_RETURN(std::unique_ptr<HybridMemory> memory, MemoryForContext(c, batch, end));
  DecodeResult result;
  result.cache_pool_bytes = memory->total_bytes();
  std::vector<SequenceMemory> seqs(batch);
  std::vector<int32_t> next(batch);
  std::vector<float> logits;
  ForwardBatch fb;
  const double fill_start = NowSeconds();
  for (int64_t i = 0; i < batch; ++i) {
    memory->Reserve(seqs[i], end);
    next[i] = static_cast<int32_t>((o.seed + 31 * i + 7) % static_cast<uint64_t>(c.vocab_size));
    if (o.synthetic_fill) {
      FillSyntheticContext(c, *memory, seqs[i], o.context, o.seed + 7919 * i);
      continue;
    }
    // Real prefill of a deterministic prompt, one sequence at a time.
    fb.seqs.assign(1, BatchSequence{});
    for (int64_t pos = 0; pos < o.context; pos += o.prefill_chunk) {
      const int64_t n = std::min(o.prefill_chunk, o.context - pos);
      fb.token_ids.resize(n);
      for (int64_t t = 0; t < n; ++t) {
        fb.token_ids[t] = static_cast<int32_t>((pos + t + 13 * i) % c.vocab_size);
      }
      fb.seqs[0] = BatchSequence{&seqs[i], pos, n, false};
      RETURN_IF_ERROR(model.Forward(fb, *memory, &logits));
    }
    next[i] = Argmax(logits.data(), c.vocab_size);
  }
  result.fill_seconds = NowSeconds() - fill_start;
  fb.token_ids.resize(batch);
  fb.seqs.resize(batch);
  int64_t position = o.context;
  // One decode step of every sequence at `position`, greedy; then the next position.
  auto step = [&]() -> absl::Status {
    for (int64_t i = 0; i < batch; ++i) {
      fb.token_ids[i] = next[i];
      fb.seqs[i] = BatchSequence{&seqs[i], position, 1, false};
    }
    RETURN_IF_ERROR(model.Forward(fb, *memory, &logits));
    for (int64_t i = 0; i < batch; ++i) {
      next[i] = Argmax(logits.data() + i * c.vocab_size, c.vocab_size);
    }
    ++position;
    return absl::OkStatus();
  };
  // One untimed step first (as llama-bench warms up): the first step after loading touched the
  // weights' pages for the first time and ran at a fraction of the speed of the rest.
  RETURN_IF_ERROR(step());
  model.set_profile(&result.profile);
  for (int64_t run = 0; run < o.runs; ++run) {
    model.set_profile(nullptr);
    before_run();
    model.set_profile(&result.profile);
    const double linear_before = result.profile.linear_seconds;
    const double cpu_start = ProcessCpuSeconds();
    const double run_start = NowSeconds();
    for (int64_t g = 0; g < o.gen; ++g) {
      const double step_start = NowSeconds();
      if (absl::Status st = step(); !st.ok()) {
        model.set_profile(nullptr);
        return st;
      }
      result.step_seconds.push_back(NowSeconds() - step_start);
    }
    result.run_seconds.push_back(NowSeconds() - run_start);
    result.run_cpu_seconds.push_back(ProcessCpuSeconds() - cpu_start);
    result.run_gemm_seconds.push_back(result.profile.linear_seconds - linear_before);
  }
  model.set_profile(nullptr);
  for (SequenceMemory& s : seqs) memory->Release(s);
  return result;
}

// A bandwidth and peak-FLOP probe, appended to the lists; nothing when probes are off. Called
// before every timed run and once after the last, so each run is bracketed by two probes.
// Arrays of --probe-mib (256 MiB by default, ~10 ms per pass here): the 64 MiB passes used
// before (2 ms) caught the shared machine's bursts and dips, and the batch-1 decode fraction
// swung 17-84% with them while the decode itself held within 5%.
void ProbeNow(const BenchOptions& o, std::vector<double>* bandwidth, std::vector<double>* peak) {
  if (!o.probes) return;
  kc::ThreadPool& pool = kc::ThreadPool::Default();
  const kc::BandwidthResult bw = kc::MeasureBandwidth(pool, o.probe_bytes, 2);
  bandwidth->push_back(bw.read_bytes_per_s);
  peak->push_back(kc::MeasurePeakFlops(pool, 5'000'000, 2).flops_per_s);
}

// The reference for run i: the mean of the probes before and after it (`probes` has one more
// entry than there are runs; with only one per run, the one before).
std::vector<double> Bracketed(const std::vector<double>& probes, size_t runs) {
  std::vector<double> ref;
  for (size_t i = 0; i < runs && i < probes.size(); ++i) {
    ref.push_back(i + 1 < probes.size() ? 0.5 * (probes[i] + probes[i + 1]) : probes[i]);
  }
  return ref;
}

// CPU time the process got per run, as a fraction of all its threads running all the time: 1
// on a dedicated machine, less when other processes hold the cores.
std::vector<double> CpuShare(const std::vector<double>& cpu, const std::vector<double>& wall) {
  std::vector<double> share;
  const double threads = kc::ThreadPool::Default().num_threads();
  for (size_t i = 0; i < cpu.size(); ++i) share.push_back(cpu[i] / (wall[i] * threads));
  return share;
}

std::vector<double> Scaled(std::vector<double> v, double factor) {
  for (double& x : v) x *= factor;
  return v;
}

absl::Status ParseOptions(const CliArgs& args, BenchOptions* o) {
  if (args.Get("device") != "cpu" && args.Get("device") != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device: '", args.Get("device"), "' is not one of cpu, cuda"));
  }
  if (args.Get("batch") == "auto") {
    o->batch_auto = true;
  } else {
    ASSIGN_OR_RETURN(o->batch, args.GetInt("batch", 1, 1 << 16));
  }
  ASSIGN_OR_RETURN(o->context, args.GetInt("context", 0, 1 << 24));
  ASSIGN_OR_RETURN(o->gen, args.GetInt("gen", 1, 1 << 20));
  ASSIGN_OR_RETURN(o->prompt_tokens, args.GetInt("prompt", 0, 1 << 24));
  ASSIGN_OR_RETURN(o->prefill_chunk, args.GetInt("prefill-chunk", 1, 1 << 20));
  ASSIGN_OR_RETURN(o->runs, args.GetInt("runs", 1, 1000));
  ASSIGN_OR_RETURN(double budget_gb, args.GetDouble("memory-budget-gb"));
  // The budget becomes host pools: at most 1 PiB (a typo past that would overflow the sizes).
  if (!(budget_gb > 0) || budget_gb > 1 << 20) {
    return absl::InvalidArgumentError("--memory-budget-gb: must be in (0, 1048576]");
  }
  o->budget_bytes = budget_gb * kGiB;
  // The CPU bench fills host pools of that size: more than the machine has cannot be allocated.
  const double physical = PhysicalMemoryBytes();
  if (physical > 0 && o->budget_bytes > physical) {
    return absl::InvalidArgumentError(absl::StrCat("--memory-budget-gb: ", budget_gb,
                                                   " GiB is more than this machine's ",
                                                   physical / kGiB, " GiB of memory"));
  }
  ASSIGN_OR_RETURN(int64_t probe_mib, args.GetInt("probe-mib", 1, 1 << 20));
  o->probe_bytes = probe_mib << 20;
  ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed", 0, INT64_MAX));
  o->seed = static_cast<uint64_t>(seed);
  const std::string fill = args.Get("fill");
  if (fill != "synthetic" && fill != "prefill") {
    return absl::InvalidArgumentError("--fill: must be synthetic or prefill");
  }
  o->synthetic_fill = fill == "synthetic";
  o->probes = !args.GetBool("no-probes");
  o->profile = args.GetBool("profile");
  return absl::OkStatus();
}

}  // namespace

int RunBench(int argc, char** argv) {
  CliArgs args;
  args.AddValue("model", "checkpoint directory (default: the embedded random-weight model)");
  args.AddValue("device", "where to run: cpu, or cuda (a CUDA build and a GPU)", "cpu");
  args.AddValue("batch", "sequences decoding together, or 'auto': the most that fit the budget",
                "1");
  args.AddValue("context", "positions each sequence holds before the measured decode steps",
                "1024");
  args.AddValue("gen", "decode steps per run", "16");
  args.AddValue("prompt",
                "prompt tokens for the prefill / time-to-first-token measurement "
                "(0: skip it)",
                "512");
  args.AddValue("prefill-chunk", "prompt tokens per forward call", "512");
  args.AddValue("fill",
                "how the context gets into the caches: synthetic (pseudo-random cache "
                "contents, no compute) or prefill (really run the tokens)",
                "synthetic");
  args.AddValue("runs", "repetitions; the JSON reports medians and every run", "3");
  args.AddValue("memory-budget-gb", "weights + caches must fit this (used by --batch auto)", "16");
  args.AddValue("probe-mib", "size of each array of the bandwidth probe", "256");
  args.AddValue("seed", "seed for prompt tokens and synthetic cache contents", "0");
  args.AddBool("no-probes", "skip the bandwidth and peak-FLOP probes (no fractions reported)");
  args.AddBool("json", "print the result as one JSON object (the default output)");
  args.AddBool("profile",
               "--device cuda: after the timed runs, time each group of kernels (jet.gdr, "
               "attn.paged, mlp.gate_up, ...) over one prefill chunk and two decode steps run "
               "without CUDA graphs");
  for (int i = 2; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::cout << "usage: jetserve bench [--model DIR] [--batch B|auto] [--context L] "
                   "[--gen G] [--prompt P] [--json]\n"
                << "measures prefill and decode throughput in-process, with the machine's "
                   "memory bandwidth and peak FLOP/s beside them\n(threads: "
                   "JETSERVE_NUM_THREADS; instruction set: JETSERVE_ISA=scalar|avx2|"
                   "avx512bf16)\n\nflags:\n"
                << args.Usage();
      return 0;
    }
  }
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok())
    return ReportUsageError("bench", s, args);
  BenchOptions o;
  if (absl::Status s = ParseOptions(args, &o); !s.ok()) return ReportUsageError("bench", s, args);
  auto dir = ResolveModelDir(args);
  if (!dir.ok()) return ReportFailure("bench", dir.status());
  o.model_dir = *dir;
  if (args.Get("device") == "cuda") return RunCudaBench(o);

  kc::ThreadPool& pool = kc::ThreadPool::Default();
  json out;
  json machine = {{"cpu", CpuModelName()},
                  {"threads", pool.num_threads()},
                  {"isa_detected", std::string(kc::IsaName(kc::DetectedIsa()))},
                  {"isa_used", std::string(kc::IsaName(kc::ActiveIsa()))}};
  double read_bw = 0, triad_bw = 0, peak = 0;
  if (o.probes) {
    std::cerr << "jetserve bench: probing memory bandwidth and peak FLOP/s...\n";
    const kc::BandwidthResult bw = kc::MeasureBandwidth(pool, o.probe_bytes, 5);
    const kc::FlopsResult fl = kc::MeasurePeakFlops(pool, 20'000'000, 5);
    read_bw = bw.read_bytes_per_s;
    triad_bw = bw.triad_bytes_per_s;
    peak = fl.flops_per_s;
    machine["stream_triad_GBps"] = triad_bw / 1e9;
    machine["stream_read_GBps"] = read_bw / 1e9;
    machine["probe_array_MiB"] = bw.array_bytes >> 20;
    machine["peak_fma_GFLOPs"] = peak / 1e9;
    machine["peak_probe_isa"] = fl.isa;
  }
  out["machine"] = machine;

  const double load_start = NowSeconds();
  auto loaded = Model::Load(o.model_dir);
  if (!loaded.ok()) return ReportFailure("bench", loaded.status());
  Model& model = **loaded;
  const ModelConfig& c = model.config();
  // As the CUDA bench: positions past the model's context are not a workload it can serve.
  const int64_t decode_end = DecodeEnd(o);
  if (decode_end > c.max_position_embeddings || o.prompt_tokens > c.max_position_embeddings) {
    return ReportFailure("bench", absl::InvalidArgumentError(absl::StrCat(
                                      "--context ", o.context, " plus the generated tokens (",
                                      decode_end - o.context, "), or --prompt ", o.prompt_tokens,
                                      ", exceeds the model's max_position_embeddings (",
                                      c.max_position_embeddings, ")")));
  }
  const double weight_bytes = static_cast<double>(DirectoryBytes(o.model_dir, ".safetensors"));
  out["model"] = {{"dir", o.model_dir},
                  {"layers",
                   {{"jet", c.num_layers_of(LayerType::kJet)},
                    {"attn", c.num_layers_of(LayerType::kAttn)},
                    {"swa", c.num_layers_of(LayerType::kSwa)}}},
                  {"hidden_size", c.hidden_size},
                  {"vocab_size", c.vocab_size},
                  {"checkpoint_bytes", weight_bytes},
                  {"load_seconds", NowSeconds() - load_start}};

  const CacheCost cost = CacheCostOf(c, 4.0);  // fp32 host pools
  int64_t batch = o.batch;
  const int64_t end = o.context + o.gen * o.runs + 1;
  if (o.batch_auto) {
    const double per_seq = cost.BytesAt(end);
    const double room = o.budget_bytes - weight_bytes;
    batch = per_seq > 0 ? static_cast<int64_t>(std::floor(room / per_seq)) : 1;
    // As for an explicit --batch: what fits the budget, at most 65,536 sequences.
    batch = std::min<int64_t>(batch, 1 << 16);
    if (batch < 1) {
      return ReportFailure(
          "bench", absl::ResourceExhaustedError(
                       absl::StrCat("one sequence at context ", end, " needs ", per_seq / kGiB,
                                    " GiB of cache; the ", o.budget_bytes / kGiB,
                                    " GiB budget leaves ", room / kGiB, " GiB after the weights")));
    }
  }
  out["config"] = {{"batch", batch},
                   {"batch_auto", o.batch_auto},
                   {"context", o.context},
                   {"gen", o.gen},
                   {"prompt_tokens", o.prompt_tokens},
                   {"prefill_chunk", o.prefill_chunk},
                   {"fill", o.synthetic_fill ? "synthetic" : "prefill"},
                   {"runs", o.runs},
                   {"memory_budget_GiB", o.budget_bytes / kGiB},
                   {"cache_bytes_per_sequence", cost.BytesAt(end)}};

  if (o.prompt_tokens > 0) {
    std::cerr << "jetserve bench: prefill of " << o.prompt_tokens << " tokens x " << o.runs
              << "...\n";
    std::vector<double> run_bw, run_peak;
    auto prefill = MeasurePrefill(model, o, [&] { ProbeNow(o, &run_bw, &run_peak); });
    if (!prefill.ok()) return ReportFailure("bench", prefill.status());
    ProbeNow(o, &run_bw, &run_peak);  // after the last run
    const std::vector<double> ref_peak = Bracketed(run_peak, prefill->seconds.size());
    const double secs = Median(prefill->seconds);
    const ForwardProfile& p = prefill->profile;
    const double flops = p.linear_flops + MixerFlops(c, 0, o.prompt_tokens);
    json j = {
        {"tokens", o.prompt_tokens},
        {"seconds_median", secs},
        {"tokens_per_s", o.prompt_tokens / secs},
        {"ttft_s", secs},
        {"gflops_per_s", flops / secs / 1e9},
        {"gemm_gflops_per_s", p.linear_flops / p.linear_seconds / 1e9},
        {"time_split_s",
         {{"linear", p.linear_seconds},
          {"attention", p.attention_seconds},
          {"jet", p.jet_seconds},
          {"other", p.forward_seconds - p.linear_seconds - p.attention_seconds - p.jet_seconds}}},
        {"runs_seconds", prefill->seconds},
        {"runs_cpu_share", CpuShare(prefill->cpu_seconds, prefill->seconds)}};
    if (!ref_peak.empty()) {
      // Each run against the mean of the peaks probed just before and after it, then the median
      // over runs.
      std::vector<double> frac, gemm_frac;
      for (size_t i = 0; i < ref_peak.size(); ++i) {
        frac.push_back(flops / prefill->seconds[i] / ref_peak[i]);
        gemm_frac.push_back(p.linear_flops / prefill->gemm_seconds[i] / ref_peak[i]);
      }
      j["fraction_of_peak_flops"] = Median(frac);
      j["gemm_fraction_of_peak_flops"] = Median(gemm_frac);
      j["runs_fraction_of_peak_flops"] = frac;
      j["runs_peak_GFLOPs_probed"] = Scaled(run_peak, 1e-9);
    }
    out["prefill"] = j;
  }

  std::cerr << "jetserve bench: decode, batch " << batch << " at context " << o.context << ", "
            << o.runs << " x " << o.gen << " steps...\n";
  std::vector<double> run_bw, run_peak;
  auto decode = MeasureDecode(model, o, batch, [&] { ProbeNow(o, &run_bw, &run_peak); });
  if (!decode.ok()) return ReportFailure("bench", decode.status());
  ProbeNow(o, &run_bw, &run_peak);  // after the last run
  {
    const DecodeResult& d = *decode;
    std::vector<double> run_tps;
    for (double s : d.run_seconds) run_tps.push_back(static_cast<double>(batch * o.gen) / s);
    const ForwardProfile& p = d.profile;
    const double steps = static_cast<double>(p.forward_calls);
    const double weight_step = p.linear_weight_bytes / steps;
    const double cache_step = batch * CacheTrafficPerStep(c, o.context + o.gen * o.runs / 2, 4.0);
    const double step_median = Median(d.step_seconds);
    json j = {
        {"batch", batch},
        {"context", o.context},
        {"steps_per_run", o.gen},
        {"tokens_per_s", Median(run_tps)},
        {"runs_tokens_per_s", run_tps},
        {"step_seconds_median", step_median},
        {"itl_s",
         {{"p50", Percentile(d.step_seconds, 50)},
          {"p90", Percentile(d.step_seconds, 90)},
          {"p99", Percentile(d.step_seconds, 99)}}},
        {"weight_bytes_per_step", weight_step},
        {"cache_bytes_per_step", cache_step},
        {"gemm_gflops_per_s", p.linear_flops / p.linear_seconds / 1e9},
        {"time_split_s",
         {{"linear", p.linear_seconds},
          {"attention", p.attention_seconds},
          {"jet", p.jet_seconds},
          {"other", p.forward_seconds - p.linear_seconds - p.attention_seconds - p.jet_seconds},
          {"sampling_and_loop", std::max(0.0,
                                         [&] {
                                           double total = 0;
                                           for (double s : d.run_seconds) total += s;
                                           return total - p.forward_seconds;
                                         }())}}},
        {"context_fill_seconds", d.fill_seconds},
        {"runs_cpu_share", CpuShare(d.run_cpu_seconds, d.run_seconds)},
        {"cache_pool_bytes", d.cache_pool_bytes}};
    const std::vector<double> ref_bw = Bracketed(run_bw, run_tps.size());
    const std::vector<double> ref_peak = Bracketed(run_peak, run_tps.size());
    if (!ref_bw.empty()) {
      // Every step must at least stream the weights once and touch each sequence's caches.
      // Each run is set against the mean of the bandwidths probed just before and just after
      // it (the machine is shared), then the median over runs is reported.
      std::vector<double> frac, gemm_frac, bound;
      const double linear_flops_per_run = p.linear_flops / static_cast<double>(o.runs);
      for (size_t i = 0; i < ref_bw.size(); ++i) {
        bound.push_back(batch / ((weight_step + cache_step) / ref_bw[i]));
        frac.push_back(run_tps[i] / bound.back());
        gemm_frac.push_back(linear_flops_per_run / d.run_gemm_seconds[i] / ref_peak[i]);
      }
      j["bandwidth_bound_tokens_per_s"] = Median(bound);
      j["fraction_of_bandwidth_bound"] = Median(frac);
      j["runs_fraction_of_bandwidth_bound"] = frac;
      j["weights_only_bound_tokens_per_s"] = batch / (weight_step / Median(ref_bw));
      j["gemm_fraction_of_peak_flops"] = Median(gemm_frac);
      j["runs_gemm_fraction_of_peak_flops"] = gemm_frac;
      j["runs_read_GBps_probed"] = Scaled(run_bw, 1e-9);
      j["runs_peak_GFLOPs_probed"] = Scaled(run_peak, 1e-9);
    }
    out["decode"] = j;
  }
  out["memory"] = {{"peak_rss_bytes", PeakRssBytes()}};
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace jetserve
