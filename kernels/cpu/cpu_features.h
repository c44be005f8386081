// Which instruction-set path the CPU kernels take, chosen once at run time from what the CPU
// supports, so one binary runs everywhere and uses the widest units it finds.
#ifndef JETSERVE_KERNELS_CPU_CPU_FEATURES_H_
#define JETSERVE_KERNELS_CPU_CPU_FEATURES_H_

#include <string_view>

// Function multi-versioning for the plain C++ loops: an AVX2/FMA clone and a baseline one,
// picked when the program loads. The pick is an ifunc resolver that the dynamic loader runs while
// relocating, before any sanitizer runtime is initialised; ThreadSanitizer instruments the
// resolver (a __tsan_func_entry call) and so crashes every binary at start-up, with gcc and clang
// alike. Under TSan the functions are therefore built once, for the baseline ISA.
#if defined(__SANITIZE_THREAD__)
#define JETSERVE_NO_TARGET_CLONES 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define JETSERVE_NO_TARGET_CLONES 1
#endif
#endif
#ifdef JETSERVE_NO_TARGET_CLONES
#define JETSERVE_TARGET_CLONES(...)
#else
#define JETSERVE_TARGET_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#endif

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
