// Device implementations behind kernels/dispatch.h. Inputs are checked and contiguous.
#pragma once

#include <torch/types.h>

#include <utility>

#include "kernels/dispatch.h"

namespace tlmoe::kernels::detail {

DispatchPlan make_plan_cpu(const torch::Tensor& idx, int64_t num_experts);
torch::Tensor gather_rows_cpu(const torch::Tensor& x, const torch::Tensor& rows);
torch::Tensor scatter_add_rows_cpu(const torch::Tensor& xs, const torch::Tensor& rows, int64_t batch);
torch::Tensor combine_rows_cpu(const torch::Tensor& ys, const torch::Tensor& w, const torch::Tensor& slot_of);
std::pair<torch::Tensor, torch::Tensor> combine_rows_backward_cpu(const torch::Tensor& dy, const torch::Tensor& ys,
                                                                  const torch::Tensor& w,
                                                                  const torch::Tensor& slot_of);

}  // namespace tlmoe::kernels::detail
