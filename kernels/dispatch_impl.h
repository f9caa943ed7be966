// Device kernels behind kernels/dispatch.h. Called by the operator registrations in
// dispatch.cpp with checked, contiguous inputs; w is already in the accumulation dtype
// (fp64 for fp64 ys, fp32 otherwise) or undefined (unit weights).
#pragma once

#include <torch/types.h>

#include <tuple>

namespace tlmoe::kernels::detail {

// (counts [E], offsets [E+1], rows [B*K], slot_of [B,K], invalid []: number of idx outside [0,E))
using PlanTensors = std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>;

PlanTensors plan_cpu(const torch::Tensor& idx, int64_t num_experts);
torch::Tensor gather_rows_cpu(const torch::Tensor& x, const torch::Tensor& rows);
torch::Tensor combine_rows_cpu(const torch::Tensor& ys, const torch::Tensor& w, const torch::Tensor& slot_of);
std::tuple<torch::Tensor, torch::Tensor> combine_rows_backward_cpu(const torch::Tensor& dy, const torch::Tensor& ys,
                                                                   const torch::Tensor& w,
                                                                   const torch::Tensor& slot_of);

// CUDA (kernels/dispatch_cuda.cu), compiled and registered only in a CUDA build.
PlanTensors plan_cuda(const torch::Tensor& idx, int64_t num_experts);
torch::Tensor gather_rows_cuda(const torch::Tensor& x, const torch::Tensor& rows);
torch::Tensor combine_rows_cuda(const torch::Tensor& ys, const torch::Tensor& w, const torch::Tensor& slot_of);
std::tuple<torch::Tensor, torch::Tensor> combine_rows_backward_cuda(const torch::Tensor& dy, const torch::Tensor& ys,
                                                                    const torch::Tensor& w,
                                                                    const torch::Tensor& slot_of);

}  // namespace tlmoe::kernels::detail
