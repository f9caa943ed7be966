// Precompiled header for translation units that use LibTorch (kernels/, lib/).
// Keep it to LibTorch and the standard library: project headers change too often.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>
