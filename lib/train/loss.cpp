#include "train/loss.h"

#include <algorithm>

namespace tlmoe::train {

LossOptions loss_options(const Config& cfg, int64_t pad_id) {
  LossOptions o;
  o.epsilon = cfg.train.label_smoothing;
  o.pad_id = pad_id;
  o.reduction = cfg.train.loss_reduction;
  return o;
}


LossResult label_smoothed_nll(const torch::Tensor& logits, const torch::Tensor& target, const LossOptions& o) {
  TORCH_CHECK(logits.dim() == 3, "label_smoothed_nll: logits must be [B,T,V], got shape ", logits.sizes());
  TORCH_CHECK(target.dim() == 2 && target.size(0) == logits.size(0) && target.size(1) == logits.size(1),
              "label_smoothed_nll: target must be [B,T] = [", logits.size(0), ",", logits.size(1), "], got shape ",
              target.sizes());
  TORCH_CHECK(logits.is_floating_point(), "label_smoothed_nll: logits must be floating point, got ",
              logits.scalar_type());
  TORCH_CHECK(!target.is_floating_point(), "label_smoothed_nll: target must hold integer ids, got ",
              target.scalar_type());
  TORCH_CHECK(o.reduction == "sum" || o.reduction == "mean", "label_smoothed_nll: unknown reduction '", o.reduction,
              "' (valid: sum, mean)");
  TORCH_CHECK(o.epsilon >= 0 && o.epsilon <= 1, "label_smoothed_nll: epsilon must be in [0, 1], got ", o.epsilon);
  const int64_t V = logits.size(2);
  const auto compute = logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto lp = torch::log_softmax(logits.to(compute), -1);              // [B,T,V]
  auto tgt = target.to(torch::kLong);
  auto keep = tgt.ne(o.pad_id);                                      // [B,T]
  auto idx = tgt.masked_fill(~keep, 0).unsqueeze(-1);                // [B,T,1] pads point at id 0
  auto nll = -lp.gather(-1, idx).squeeze(-1);                        // [B,T]
  auto zero = torch::zeros({}, lp.options());
  auto nll_sum = torch::where(keep, nll, zero).sum();
  LossResult r;
  r.tokens = keep.sum().item<int64_t>();
  torch::Tensor loss;
  if (o.epsilon > 0) {
    auto smooth = -lp.sum(-1);                                       // [B,T]
    auto smooth_sum = torch::where(keep, smooth, zero).sum();
    loss = (1.0 - o.epsilon) * nll_sum + (o.epsilon / static_cast<double>(V)) * smooth_sum;
  } else {
    loss = nll_sum;
  }
  if (o.reduction == "mean") loss = loss / static_cast<double>(std::max<int64_t>(r.tokens, 1));
  r.loss = loss;
  r.nll_sum = nll_sum.detach();
  return r;
}

}  // namespace tlmoe::train
