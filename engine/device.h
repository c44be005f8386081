// Where a model's forward pass runs, by the name the CLI's --device takes.
#ifndef JETSERVE_ENGINE_DEVICE_H_
#define JETSERVE_ENGINE_DEVICE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "engine/model.h"

namespace jetserve {

// OK when `name` is one of cpu, cuda, null, else the error UseDevice gives (for flag checks made
// before the model is loaded).
absl::Status CheckDeviceName(std::string_view name);

// "cpu": nothing to do. "cuda": attaches a CudaBackend (cuda_backend.h) to `model`; an error
// naming why on a build without CUDA or a machine without a GPU. "null": attaches a NullBackend
// (null_backend.h: no computation, for measuring the server's own overhead). With a backend
// attached, the model's HybridMemory is created with host_storage = model.needs_host_cache()
// and Model::AttachMemory. Anything else is an error naming the choices.
absl::Status UseDevice(Model& model, const std::string& device);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_DEVICE_H_
