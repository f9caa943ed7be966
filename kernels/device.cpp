// Autocast and memory accounting for CPU and CUDA (CUDA parts only in a CUDA build).
#include "kernels/device.h"

#include <ATen/autocast_mode.h>
#include <sys/resource.h>

#include <stdexcept>

#if TLMOE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace tlmoe::kernels {

bool use_bf16_autocast(const std::string& precision, const torch::Device& device) {
  if (precision == "bf16") return true;
  if (precision == "fp32") return false;
  if (precision == "auto") return device.is_cuda();
  throw std::invalid_argument("precision must be auto, fp32 or bf16, got '" + precision + "'");
}

AutocastGuard::AutocastGuard(bool enabled, const torch::Device& device) : enabled_(enabled), type_(device.type()) {
  if (!enabled_) return;
  prev_enabled_ = at::autocast::is_autocast_enabled(type_);
  prev_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, at::kBFloat16);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  // The cast cache (bf16 copies of the weights) lives until the outermost scope ends.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type_, prev_enabled_);
  at::autocast::set_autocast_dtype(type_, prev_dtype_);
}

MemoryReading peak_memory(const torch::Device& device) {
#if TLMOE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    const auto& a = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    return {a.peak, "cuda_peak_allocated"};
  }
#endif
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return {static_cast<int64_t>(ru.ru_maxrss) * 1024, "cpu_peak_rss"};  // Linux reports KiB
}

void reset_peak_memory(const torch::Device& device) {
#if TLMOE_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
}

}  // namespace tlmoe::kernels
