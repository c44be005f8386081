// `jetserve bench --device cuda`: prefill and decode on the GPU, beside the device's measured
// copy bandwidth; optionally the device time per group of kernels (--profile).
#ifndef JETSERVE_SERVER_BENCH_CUDA_H_
#define JETSERVE_SERVER_BENCH_CUDA_H_

#include "server/bench_options.h"

namespace jetserve {

// Prints the JSON result on stdout; returns the process exit status (1 with a message on
// stderr when the model, the device or the build cannot run it).
int RunCudaBench(const BenchOptions& o);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_BENCH_CUDA_H_
