#include "server/signals.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "server/logging.h"
#include "spdlog/spdlog.h"

namespace jetserve {
namespace {

sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  const sigset_t set = ShutdownSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

std::optional<int> PollShutdownSignal() {
  const sigset_t set = ShutdownSignals();
  const timespec zero{0, 0};
  const int sig = sigtimedwait(&set, nullptr, &zero);
  if (sig > 0) return sig;
  return std::nullopt;
}

void ExitOnNextShutdownSignal() {
  std::thread([] {
    const int sig = WaitForShutdownSignal();
    LogEvent(spdlog::level::warn, "second shutdown signal: exiting without draining",
             {{"signal", sig}});
    // Not ShutdownLogging(): other threads may still be logging. The line may be lost.
    spdlog::default_logger_raw()->flush();
    std::_Exit(1);
  }).detach();
}

}  // namespace jetserve
