// The optimisation pieces of the trainer (docs/method.md §6.3-§6.6, §13.5, §13.6):
//   AdamW                  Hugging Face `transformers.AdamW` semantics (decay after the Adam step)
//   linear_warmup_decay    HF get_linear_schedule_with_warmup, as a multiplier of the base lr
//   clip_grad_norm         torch.nn.utils.clip_grad_norm_ semantics, global L2 over all grads
//   build_param_groups     backbone / router / task-table groups, decay and no-decay subsets
//   clip_params            the tensors whose gradients the global clip covers
//
// AdamW, per parameter p with gradient g, its own step counter t and group (lr, wd):
//   t <- t + 1
//   m <- b1*m + (1-b1)*g
//   v <- b2*v + (1-b2)*g*g
//   p <- p - lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
//   p <- p - lr*wd*p                     (only when wd > 0; uses the p just updated)
// torch::optim::AdamW differs: it decays first (p <- p*(1-lr*wd)) and adds eps to sqrt(v)/sqrt(1-b2^t).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace tlmoe::train {

// One optimizer group; `params` and `param_names` are parallel (same length).
struct ParamGroup {
  std::string name;
  std::vector<torch::Tensor> params;
  std::vector<std::string> param_names;
  double lr = 0;            // base learning rate, multiplied by the schedule in AdamW::step
  double weight_decay = 0;
};

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

// train.adam_beta1 / adam_beta2 / adam_eps (shared by train and adapt).
AdamWOptions adamw_options(const Config& cfg);

class AdamW {
 public:
  // Parameter names must be unique over all groups (they key the saved state). State (m, v)
  // lives next to each parameter: fp32 for fp32/fp16/bf16 parameters, fp64 for fp64 ones.
  AdamW(std::vector<ParamGroup> groups, AdamWOptions opts);

  // One update with lr_g = group.lr * lr_multiplier. Parameters whose grad is undefined are
  // skipped (no state change); an all-zero grad still steps (momentum, decay).
  void step(double lr_multiplier);
  // Sets every grad to undefined (set_to_none).
  void zero_grad();

  const std::vector<ParamGroup>& groups() const { return groups_; }
  const AdamWOptions& options() const { return opts_; }

  // Full state for an exact resume, per parameter:
  //   "adamw.<param name>.step"        int64 scalar (0-dim)
  //   "adamw.<param name>.exp_avg"     like the parameter
  //   "adamw.<param name>.exp_avg_sq"  like the parameter
  // exp_avg / exp_avg_sq are detached views of the live state (on the parameter's device):
  // write them out before the next step().
  std::vector<std::pair<std::string, torch::Tensor>> state_tensors() const;
  // Restores what state_tensors() produced. Keys not starting with "adamw." are ignored (a
  // checkpoint may keep other state in the same file). Throws tlmoe::DataError naming the entry
  // when one is missing, has the wrong shape, or names a parameter this optimizer does not have.
  void load_state_tensors(const std::map<std::string, torch::Tensor>& state);

 private:
  struct State {
    int64_t step = 0;
    torch::Tensor exp_avg, exp_avg_sq;  // state dtype, parameter's device
  };
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<State>> state_;  // [group][param]
  AdamWOptions opts_;
};

// Learning-rate multiplier after `step` optimizer steps (the first step uses step = 0):
//   step/warmup                               for step < warmup
//   max(0, (total-step)/(total-warmup))       otherwise (denominators at least 1, as HF)
double linear_warmup_decay(int64_t step, int64_t warmup, int64_t total);
// int(ratio * total), truncating like Python's int().
int64_t warmup_steps(double ratio, int64_t total);

// Global L2 norm over every defined grad of `params` (per-tensor norms in fp32 or fp64, combined
// in fp64). When max_norm > 0 and max_norm/(norm+1e-6) < 1, every grad is multiplied by that
// factor. Returns the norm before clipping; 0 when no grad is defined. A non-finite norm
// (NaN/Inf grads) is returned as is and nothing is scaled: the caller decides to stop.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);
// True when every defined grad of `params` is finite.
bool grads_finite(const std::vector<torch::Tensor>& params);

struct GroupSpec {
  double lr = 0, router_lr = 0, task_lr = 0, weight_decay = 0;
  bool freeze_task_table = false;  // the table is frozen (requires_grad=false) and left out
  bool reference_compat = false;   // the reference's name rule for no-decay (docs/method.md §13.5)
  std::string router_prefix = "router.";
  std::string task_table_prefix = "task_table.";
};

// Groups, in this order, empty ones dropped:
//   "backbone"           everything else, decayed            lr,        weight_decay
//   "backbone_no_decay"  everything else, not decayed        lr,        0
//   "router"             names under router_prefix, decayed  router_lr, weight_decay
//   "router_no_decay"    the same, not decayed               router_lr, 0
//   "task_table"         names under task_table_prefix       task_lr,   weight_decay
// Only parameters with requires_grad; a parameter shared by several modules appears once, under
// its first name. Not decayed: by default every parameter whose own name is "bias" or ends in
// "_bias", and every parameter of a torch::nn::LayerNorm module, found by module type
// (docs/method.md §13.5); with reference_compat, every parameter whose full name contains "bias" or "LayerNorm.weight" (so LayerNorm weights named
// like BART's ARE decayed). With freeze_task_table the task-table parameters are set to
// requires_grad=false and no group holds them.
std::vector<ParamGroup> build_param_groups(torch::nn::Module& model, const GroupSpec& spec);

// The tensors whose gradients the global clip covers. Default (docs/method.md §13.6): the parameters of
// the groups with lr > 0 that require grad. With reference_compat (docs/method.md §13.6): every parameter
// of `model`, including a router or task table that is frozen or at lr 0.
std::vector<torch::Tensor> clip_params(const std::vector<ParamGroup>& groups, torch::nn::Module& model,
                                       bool reference_compat);

}  // namespace tlmoe::train
