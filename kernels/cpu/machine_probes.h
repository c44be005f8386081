// Measurements of this machine's limits, run in-process by `jetserve bench` so that kernel
// speeds can be reported as a fraction of them: a STREAM-style memory bandwidth probe and a
// peak FMA throughput probe, both on every thread of a pool.
#ifndef JETSERVE_KERNELS_CPU_MACHINE_PROBES_H_
#define JETSERVE_KERNELS_CPU_MACHINE_PROBES_H_

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace jetserve::kernels::cpu {

struct BandwidthResult {
  double triad_bytes_per_s = 0;  // a[i] = b[i] + s*c[i]: 12 bytes per fp32 element (STREAM)
  double read_bytes_per_s = 0;   // sum of one array in 8 streams per thread, as a GEMV reads
  int64_t array_bytes = 0;       // size of each array
};

// Best of `repeats` passes over arrays of `array_bytes` each (choose ≫ last-level cache), the
// work split over the pool's threads with each thread touching its own pages first.
BandwidthResult MeasureBandwidth(ThreadPool& pool, int64_t array_bytes, int repeats);

struct FlopsResult {
  double flops_per_s = 0;  // fp32, counting an FMA as 2
  const char* isa = "";    // the instruction set the loop used
};

// Independent FMA chains in registers on every thread, best of `repeats` runs of
// `iterations` loop trips each. The widest FMA the CPU has (AVX-512, AVX2) or scalar.
FlopsResult MeasurePeakFlops(ThreadPool& pool, int64_t iterations, int repeats);

}  // namespace jetserve::kernels::cpu

#endif  // JETSERVE_KERNELS_CPU_MACHINE_PROBES_H_
