// The `device` config value as a torch::Device.
#pragma once

#include <torch/types.h>

#include <string>

namespace tlmoe {

// "cpu", "cuda" or "auto" (CUDA when available). UsageError for cuda without a device.
torch::Device pick_device(const std::string& name);

}  // namespace tlmoe
