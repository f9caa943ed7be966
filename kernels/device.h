// Device facilities the training loops need besides the ops: mixed precision (autocast) and
// memory accounting, the same calls on CPU and CUDA. No build-option #ifdef here.
//
//   AutocastGuard g(enabled, device);   // bf16 autocast for the forward pass inside the scope
//   MemoryReading r = peak_memory(device); reset_peak_memory(device);
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>

namespace tlmoe::kernels {

// Resolves a `train.precision` value for a device: "fp32" -> false, "bf16" -> true,
// "auto" -> true on CUDA (bf16 autocast), false on CPU.
bool use_bf16_autocast(const std::string& precision, const torch::Device& device);

// Enables LibTorch autocast to bf16 for `device`'s type in this scope (nestable) and restores
// the previous state after; parameters stay fp32 (the master weights), matmuls run in bf16.
class AutocastGuard {
 public:
  AutocastGuard(bool enabled, const torch::Device& device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_ = false;
  c10::DeviceType type_ = c10::DeviceType::CPU;
  bool prev_enabled_ = false;
  c10::ScalarType prev_dtype_ = c10::ScalarType::BFloat16;
};

struct MemoryReading {
  int64_t peak_bytes = 0;
  std::string kind;  // "cuda_peak_allocated" (since the last reset) | "cpu_peak_rss" (process lifetime)
};

MemoryReading peak_memory(const torch::Device& device);
// CUDA: starts a new peak interval; CPU: nothing (the RSS peak is per process).
void reset_peak_memory(const torch::Device& device);

}  // namespace tlmoe::kernels
