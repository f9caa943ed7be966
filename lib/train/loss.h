// Label-smoothed negative log-likelihood (docs/method.md §1.7, fairseq's label_smoothed_nll_loss):
//   lp = log_softmax(logits) in fp32 (fp64 for fp64 logits)           [B,T,V]
//   nll    = sum over non-pad targets of -lp[target]
//   smooth = sum over non-pad targets of sum_v -lp[v]
//   L = (1-eps)*nll + (eps/V)*smooth                                     ("sum", the reference)
//   L / tokens                                                            ("mean", docs/method.md §13.10)
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "config/config.h"

namespace tlmoe::train {

struct LossOptions {
  double epsilon = 0.1;           // label smoothing
  int64_t pad_id = 1;             // target positions holding pad_id are excluded
  std::string reduction = "sum";  // "sum" | "mean" (over non-pad target tokens)
};

// train.label_smoothing and train.loss_reduction with the tokenizer's pad id (train and adapt).
LossOptions loss_options(const Config& cfg, int64_t pad_id);

struct LossResult {
  torch::Tensor loss;     // scalar, fp32 (fp64 for fp64 logits): what backward() uses
  torch::Tensor nll_sum;  // detached scalar: sum of -log p[target] over non-pad targets (no smoothing)
  int64_t tokens = 0;     // non-pad targets
};

// logits [B,T,V] (any floating dtype), target [B,T] int64. With reduction "mean" and no
// non-pad target the loss is 0 (the sum is empty), not NaN.
LossResult label_smoothed_nll(const torch::Tensor& logits, const torch::Tensor& target, const LossOptions& o);

}  // namespace tlmoe::train
