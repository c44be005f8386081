#include "kernels/cpu/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace jetserve::kernels::cpu {
namespace {

Isa Detect() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
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
