// Expert dispatch for task-level routing: whole sequences move between experts, not tokens.
//
// Given per-example expert choices idx [B,K] (K experts per example) over E experts:
//   plan      = histogram of idx into counts [E], exclusive scan into offsets [E+1], and a
//               stable permutation `rows` [B*K] listing (example) in expert-contiguous order;
//               slot j of expert e is rows[offsets[e] + j]; `slot_of` [B,K] gives the position
//               of (b, k) in that order.
//   gather    = x[rows]                  x [B,...] -> xs [B*K,...] (expert-contiguous)
//   combine   = y[b] = sum_k w[b,k] * ys[slot_of[b,k]]      ys [B*K,...], w [B,K] -> y [B,...]
// Autograd: gather's backward is a scatter-add; combine's backward gives d ys (scatter of
// w * dy) and d w (row dot products). This header knows nothing about models.
//
// Preconditions (checked): idx is int64, 0 <= idx < E; w is [B,K] of x's dtype; tensors on
// one device. CPU now; the CUDA implementation plugs in behind the same functions.
#pragma once

#include <torch/types.h>

namespace tlmoe::kernels {

struct DispatchPlan {
  torch::Tensor counts;   // [E]      int64, examples routed to each expert
  torch::Tensor offsets;  // [E+1]    int64, exclusive scan of counts
  torch::Tensor rows;     // [B*K]    int64, source example of each expert-contiguous slot
  torch::Tensor slot_of;  // [B,K]    int64, slot of choice (b,k)
};

DispatchPlan make_plan(const torch::Tensor& idx, int64_t num_experts);

// xs [B*K, ...] = x [B, ...] rows in plan order. Differentiable.
torch::Tensor gather_rows(const torch::Tensor& x, const DispatchPlan& plan);

// y [B, ...] = sum_k w[b,k] * ys[slot_of[b,k]]. Differentiable in ys and w.
torch::Tensor combine_rows(const torch::Tensor& ys, const torch::Tensor& w, const DispatchPlan& plan);

}  // namespace tlmoe::kernels
