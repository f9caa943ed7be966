#include "common/device.h"

#include <torch/cuda.h>

#include "common/error.h"

namespace tlmoe {

torch::Device pick_device(const std::string& d) {
  if (d == "cpu") return torch::kCPU;
  if (d == "cuda") {
    if (!torch::cuda::is_available()) throw UsageError("device: cuda was requested but no CUDA device is available");
    return torch::kCUDA;
  }
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

}  // namespace tlmoe
