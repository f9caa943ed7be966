// Entry point of the GPU tests: exits with ctest's skip code (77) when no CUDA device is
// present or the build has no CUDA kernels, so a CPU run reports them skipped, never passed.
#define CATCH_CONFIG_RUNNER
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <iostream>

int main(int argc, char** argv) {
  if (!TLMOE_WITH_CUDA) {
    std::cout << "tlmoe was built without CUDA kernels: GPU tests skipped\n";
    return 77;
  }
  if (!torch::cuda::is_available()) {
    std::cout << "no CUDA device: GPU tests skipped\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
