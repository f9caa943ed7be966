#include "common/version.h"

#include <torch/cuda.h>
#include <torch/version.h>

namespace tlmoe {

std::string tlmoe_version() { return TLMOE_VERSION; }
std::string git_sha() { return TLMOE_GIT_SHA; }
std::string libtorch_version() { return TORCH_VERSION; }
bool built_with_cuda() { return TLMOE_WITH_CUDA; }

std::string version_banner() {
  std::string s = "tlmoe " + tlmoe_version() + " (git " + git_sha() + ")\n";
  s += "LibTorch " + libtorch_version() + "\n";
  s += std::string("CUDA kernels: ") + (built_with_cuda() ? "on" : "off");
  s += std::string("; CUDA device: ") + (torch::cuda::is_available() ? "available" : "none") + "\n";
  return s;
}

}  // namespace tlmoe
