// Build identity, for `tlmoe --version` and the meta.json of checkpoints.
#pragma once

#include <string>

namespace tlmoe {

std::string tlmoe_version();    // "0.1.0"
std::string git_sha();          // short SHA of the source tree at configure time
std::string libtorch_version(); // LibTorch the binary was built against
bool built_with_cuda();         // were kernels/*.cu compiled in
std::string version_banner();   // the multi-line text of --version

}  // namespace tlmoe
