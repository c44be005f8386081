#include "engine/device.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "engine/cuda_backend.h"
#include "engine/null_backend.h"
#include "engine/status_macros.h"

namespace jetserve {

absl::Status UseDevice(Model& model, const std::string& device) {
  if (device == "cpu") return absl::OkStatus();
  if (device == "null") {
    model.set_backend(std::make_unique<NullBackend>(model.config()));
    return absl::OkStatus();
  }
  if (device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device: '", device, "' is not one of ", kDeviceNames));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create(model, {}));
  model.set_backend(std::move(backend));
  return absl::OkStatus();
}

}  // namespace jetserve
