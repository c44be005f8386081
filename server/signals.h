// SIGTERM / SIGINT handling without signal handlers: the signals are blocked in every thread
// and taken synchronously with sigwait, so shutdown work runs on an ordinary thread instead of
// in a handler (where almost nothing is async-signal-safe).
#ifndef JETSERVE_SERVER_SIGNALS_H_
#define JETSERVE_SERVER_SIGNALS_H_

#include <optional>

namespace jetserve {

// Blocks SIGTERM and SIGINT in the calling thread. Call before starting any thread: threads
// inherit the mask, so the signals then stay pending until taken by the functions below.
void BlockShutdownSignals();

// Waits for SIGTERM or SIGINT and returns its number.
int WaitForShutdownSignal();

// Returns a pending SIGTERM or SIGINT, taking it, without waiting.
std::optional<int> PollShutdownSignal();

// Starts a detached thread that ends the process at once (exit code 1) on a second SIGTERM or
// SIGINT, for an operator who does not want to wait for the graceful drain.
void ExitOnNextShutdownSignal();

}  // namespace jetserve

#endif  // JETSERVE_SERVER_SIGNALS_H_
