// Small helpers shared by `jetserve bench` and `jetserve bench-serve`: a monotonic clock,
// order statistics, and the on-disk size of a checkpoint.
#ifndef JETSERVE_SERVER_BENCH_UTIL_H_
#define JETSERVE_SERVER_BENCH_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace jetserve {

// Seconds on a monotonic clock (only differences mean anything).
double NowSeconds();

// The p-th percentile (0..100) by linear interpolation between order statistics, as numpy's
// default does; 0 for an empty list.
double Percentile(std::vector<double> values, double p);
inline double Median(const std::vector<double>& values) { return Percentile(values, 50); }

// Total bytes of the regular files in `dir` whose names end with `suffix`.
int64_t DirectoryBytes(const std::string& dir, const std::string& suffix);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_BENCH_UTIL_H_
