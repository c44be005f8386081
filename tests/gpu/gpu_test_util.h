// Helpers for the GPU tests: skipping without a device, device buffers, bf16 rounding and
// tolerance checks.
#ifndef JETSERVE_TESTS_GPU_GPU_TEST_UTIL_H_
#define JETSERVE_TESTS_GPU_GPU_TEST_UTIL_H_

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/dtype.h"

namespace jetserve::gpu_test {

// Skips the test (with the runtime's reason) where no CUDA device is usable.
#define SKIP_WITHOUT_CUDA()                                                            \
  do {                                                                                 \
    const absl::Status jetserve_cuda_ok_ = ::jetserve::kernels::cuda::CudaAvailable(); \
    if (!jetserve_cuda_ok_.ok()) GTEST_SKIP() << jetserve_cuda_ok_.message();          \
  } while (0)

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { Resize(n); }
  explicit DeviceBuffer(const std::vector<T>& host) {
    Resize(host.size());
    Upload(host);
  }
  ~DeviceBuffer() {
    if (p_ != nullptr) cudaFree(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void Resize(size_t n) {
    if (p_ != nullptr) cudaFree(p_);
    p_ = nullptr;
    n_ = n;
    EXPECT_EQ(cudaMalloc(&p_, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
    cudaMemset(p_, 0, std::max<size_t>(1, n) * sizeof(T));
  }
  void Upload(const std::vector<T>& host) {
    ASSERT_LE(host.size(), n_);
    EXPECT_EQ(cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  std::vector<T> Download() const {
    std::vector<T> host(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

inline std::vector<float> RandomVector(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = kernels::FloatToBf16(v[i]);
  return out;
}

// v rounded to bf16 and back: the values a bf16 cache or GEMM input actually holds.
inline std::vector<float> RoundBf16(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = kernels::Bf16ToFloat(kernels::FloatToBf16(v[i]));
  return out;
}

inline std::vector<float> FromBf16(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = kernels::Bf16ToFloat(v[i]);
  return out;
}

// bf16 tolerance of the issue: |a - b| <= atol + rtol |b|.
constexpr float kBf16Atol = 1.6e-2f, kBf16Rtol = 5e-3f;
// fp32 paths (state, fp32 outputs of fp32 math).
constexpr float kF32Atol = 2e-4f, kF32Rtol = 2e-4f;

inline void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float atol,
                        float rtol, const std::string& what, size_t n = SIZE_MAX) {
  n = std::min({n, got.size(), want.size()});
  size_t bad = 0;
  double worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < n; ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double allowed = atol + rtol * std::fabs(want[i]);
    if (!(err <= allowed)) {
      ++bad;
      if (!(err <= worst)) {
        worst = err;
        worst_i = i;
      }
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << n << " elements off; worst at " << worst_i
                     << ": got " << got[worst_i] << ", want " << want[worst_i];
}

}  // namespace jetserve::gpu_test

#endif  // JETSERVE_TESTS_GPU_GPU_TEST_UTIL_H_
