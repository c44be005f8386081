// Which instruction-set path the CPU kernels take, chosen once at run time from what the CPU
// supports, so one binary runs everywhere and uses the widest units it finds.
#ifndef JETSERVE_KERNELS_CPU_CPU_FEATURES_H_
#define JETSERVE_KERNELS_CPU_CPU_FEATURES_H_

#include <string_view>

namespace jetserve::kernels::cpu {

enum class Isa {
  kScalar,      // portable C++: the reference path, and the fallback on any x86-64 or other CPU
  kAvx2,        // AVX2 + FMA + F16C (x86-64-v3)
  kAvx512Bf16,  // AVX-512F/BW/VL + AVX512_BF16 (vdpbf16ps) for bf16 weights
};

std::string_view IsaName(Isa isa);

// The best path this CPU supports.
Isa DetectedIsa();

// The path the kernels use: DetectedIsa(), lowered by JETSERVE_ISA=scalar|avx2|avx512bf16 in the
// environment (never raised above what the CPU supports), or by SetActiveIsa.
Isa ActiveIsa();

// For tests and benchmarks: run the kernels on `isa` (clamped to DetectedIsa()). Not
// thread-safe against running kernels. Returns the path actually set.
Isa SetActiveIsa(Isa isa);

}  // namespace jetserve::kernels::cpu

#endif  // JETSERVE_KERNELS_CPU_CPU_FEATURES_H_
