// Device implementations behind kernels/dispatch.h. Inputs are checked and contiguous.
#pragma once

#include <torch/types.h>

#include <utility>

#include "kernels/dispatch.h"

namespace tlmoe::kernels::detail {

DispatchPlan make_plan_cpu(const torch::Tensor& idx, int64_t num_experts);
torch::Tensor gather_rows_cpu(const torch::Tensor& x, const torch::Tensor& rows);
// Device-generic (LibTorch ops): the backward passes.
torch::Tensor scatter_add_rows(const torch::Tensor& xs, const torch::Tensor& rows, int64_t batch);
torch::Tensor combine_rows_cpu(const torch::Tensor& ys, const torch::Tensor& w, const torch::Tensor& slot_of);
std::pair<torch::Tensor, torch::Tensor> combine_rows_backward(const torch::Tensor& dy, const torch::Tensor& ys,
                                                                  const torch::Tensor& w,
                                                                  const torch::Tensor& slot_of);

// CUDA (kernels/dispatch_cuda.cu), compiled only when TLMOE_WITH_CUDA.
torch::Tensor gather_rows_cuda(const torch::Tensor& x, const torch::Tensor& rows);
torch::Tensor combine_rows_cuda(const torch::Tensor& ys, const torch::Tensor& w, const torch::Tensor& slot_of);

}  // namespace tlmoe::kernels::detail
