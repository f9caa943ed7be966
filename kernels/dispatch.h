// Expert dispatch for task-level routing: whole sequences move between experts, not tokens.
//
// Given per-example expert choices idx [B,K] (K experts per example) over E experts:
//   plan      = histogram of idx into counts [E], exclusive scan into offsets [E+1], and a
//               stable permutation `rows` [B*K] listing (example) in expert-contiguous order;
//               slot j of expert e is rows[offsets[e] + j]; `slot_of` [B,K] gives the position
//               of (b, k) in that order.
//   gather    = x[rows]                  x [B,...] -> xs [B*K,...] (expert-contiguous)
//   combine   = y[b] = sum_k w[b,k] * ys[slot_of[b,k]]      ys [B*K,...], w [B,K] -> y [B,...]
//               (the "scatter" back from expert order, weighted over the K experts of b)
// Autograd: gather's backward is an unweighted combine (a scatter-add with no atomics: each
// example sums its K slots); combine's backward gives d ys[slot_of[b,k]] = w[b,k] dy[b] and
// d w[b,k] = <dy[b], ys[slot_of[b,k]]>.
//
// The four ops are LibTorch operators (namespace `tlmoe`, CPU and CUDA kernels, an Autograd
// kernel), callable by name through the dispatcher as well as through these functions:
//   tlmoe::dispatch_plan(Tensor idx, int num_experts) -> (counts, offsets, rows, slot_of, invalid)
//   tlmoe::gather_rows(Tensor x, Tensor rows) -> Tensor
//   tlmoe::combine_rows(Tensor ys, Tensor? w, Tensor slot_of) -> Tensor
//   tlmoe::combine_rows_backward(Tensor dy, Tensor ys, Tensor w, Tensor slot_of) -> (Tensor, Tensor)
//
// Dtypes: x/ys in fp32, fp64, fp16 or bf16; w of ys's dtype or fp32 (accumulation is in fp32, in
// fp64 for fp64). Preconditions (checked here, with messages naming the op): idx int64 in
// [0, E); all tensors on one device (CPU, or CUDA in a CUDA build); shapes consistent with the plan.
// This header knows nothing about models and carries no build-option #ifdef.
#pragma once

#include <torch/types.h>

#include <vector>

namespace tlmoe::kernels {

struct DispatchPlan {
  torch::Tensor counts;   // [E]      int64, examples routed to each expert
  torch::Tensor offsets;  // [E+1]    int64, exclusive scan of counts
  torch::Tensor rows;     // [B*K]    int64, source example of each expert-contiguous slot
  torch::Tensor slot_of;  // [B,K]    int64, slot of choice (b,k)
  std::vector<int64_t> host_offsets;  // offsets on the host (slice bounds of each expert)

  int64_t num_experts() const { return static_cast<int64_t>(host_offsets.size()) - 1; }
  // True when every example goes to one expert (K = 1), in order: rows = 0..B-1, so gathering
  // is the identity and the caller may run that expert on x directly.
  bool single_expert() const;
};

// On CUDA the plan is built on the device; one small device-to-host copy brings the offsets
// (and the range check) back.
DispatchPlan make_plan(const torch::Tensor& idx, int64_t num_experts);

// xs [B*K, ...] = x [B, ...] rows in plan order. Differentiable.
torch::Tensor gather_rows(const torch::Tensor& x, const DispatchPlan& plan);

// y [B, ...] = sum_k w[b,k] * ys[slot_of[b,k]]. Differentiable in ys and w. w: ys's dtype or fp32.
torch::Tensor combine_rows(const torch::Tensor& ys, const torch::Tensor& w, const DispatchPlan& plan);

// y [B, ...] = sum_k ys[slot_of[b,k]] (unit weights; the backward of gather_rows). Differentiable.
torch::Tensor sum_rows(const torch::Tensor& ys, const DispatchPlan& plan);

}  // namespace tlmoe::kernels
