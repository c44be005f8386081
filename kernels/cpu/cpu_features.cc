#include "kernels/cpu/cpu_features.h"

#include <atomic>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <cstdlib>
#include <cstring>

namespace jetserve::kernels::cpu {
namespace {

#if defined(__x86_64__)
// F16C from CPUID leaf 1 (ECX bit 29) rather than __builtin_cpu_supports("f16c"), which clang
// before 16 does not know (the sanitizer and fuzz builds use clang 14).
bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

Isa Detect() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HasF16c();
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16")) {
    return Isa::kAvx512Bf16;
  }
  if (avx2) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

Isa Clamp(Isa wanted) {
  return static_cast<int>(wanted) <= static_cast<int>(DetectedIsa()) ? wanted : DetectedIsa();
}

std::atomic<Isa>& Active() {
  static std::atomic<Isa> active = [] {
    Isa isa = DetectedIsa();
    if (const char* env = std::getenv("JETSERVE_ISA"); env != nullptr) {
      if (std::strcmp(env, "scalar") == 0) isa = Clamp(Isa::kScalar);
      if (std::strcmp(env, "avx2") == 0) isa = Clamp(Isa::kAvx2);
      if (std::strcmp(env, "avx512bf16") == 0) isa = Clamp(Isa::kAvx512Bf16);
    }
    return isa;
  }();
  return active;
}

}  // namespace

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512Bf16:
      return "avx512bf16";
  }
  return "unknown";
}

Isa DetectedIsa() {
  static const Isa detected = Detect();
  return detected;
}

Isa ActiveIsa() { return Active().load(std::memory_order_relaxed); }

Isa SetActiveIsa(Isa isa) {
  const Isa set = Clamp(isa);
  Active().store(set, std::memory_order_relaxed);
  return set;
}

}  // namespace jetserve::kernels::cpu
