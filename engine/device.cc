#include "engine/device.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "engine/cuda_backend.h"
#include "engine/null_backend.h"
#include "engine/status_macros.h"

namespace jetserve {

namespace {
constexpr char kDeviceNames[] = "cpu, cuda, null";
}  // namespace

absl::Status CheckDeviceName(std::string_view name) {
  if (name == "cpu" || name == "cuda" || name == "null") return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--device: '", std::string(name), "' is not one of ", kDeviceNames));
}

absl::Status UseDevice(Model& model, const std::string& device) {
  RETURN_IF_ERROR(CheckDeviceName(device));
  if (device == "cpu") return absl::OkStatus();
  if (device == "null") {
    model.set_backend(std::make_unique<NullBackend>(model.config()));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create(model, {}));
  model.set_backend(std::move(backend));
  return absl::OkStatus();
}

}  // namespace jetserve
