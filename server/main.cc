// jetserve: one binary, several subcommands.
#include <cstring>
#include <iostream>
#include <string>

#include "absl/synchronization/mutex.h"
#include "server/commands.h"

namespace {

constexpr char kUsage[] =
    R"(usage: jetserve COMMAND [flags]   (jetserve COMMAND --help for its flags)

commands:
  serve             run the gRPC server (jetserve.v1.JetServe, health, reflection, /metrics)
  client            stream a completion from a running server to stdout
  generate          generate a completion in-process (greedy by default)
  tokenize          print the token ids of stdin as JSON
  make-checkpoint   write a random-weight checkpoint for a config.json
  bench             measure prefill/decode throughput in-process, beside the machine's limits
  bench-serve       load-test a running server over gRPC (throughput, TTFT, ITL percentiles)

Without --model, commands use the embedded default model: a small Jet-Nemotron-architecture
checkpoint with RANDOM weights and a byte-level tokenizer, generated on first use. Its output is
meaningless; pass --model DIR with a real Jet-Nemotron-2B/4B HuggingFace directory for real text.
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock detection on: a
  // lock-order graph updated at every Lock (gRPC's locks are absl::Mutex too), ~5% of the
  // engine's step thread at batch 768 when it made the streams' writes itself. Our
  // release builds turn it off; debug and sanitizer builds (no NDEBUG) keep it.
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  const std::string command = argv[1];
  if (command == "serve") return jetserve::RunServe(argc, argv);
  if (command == "client") return jetserve::RunClient(argc, argv);
  if (command == "generate") return jetserve::RunGenerate(argc, argv);
  if (command == "tokenize") return jetserve::RunTokenize(argc, argv);
  if (command == "make-checkpoint") return jetserve::RunMakeCheckpoint(argc, argv);
  if (command == "bench") return jetserve::RunBench(argc, argv);
  if (command == "bench-serve") return jetserve::RunBenchServe(argc, argv);
  std::cerr << "jetserve: unknown command '" << command << "'\n\n" << kUsage;
  return 2;
}
