// FT-TextEmb (docs/method.md §5.2, §13.14): a copy of the source model is fine-tuned as a whole on
// one task's examples, then its encoder's states are pooled into the task's vector.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"
#include "data/batching.h"
#include "model/tlmoe_model.h"
#include "train/optim.h"

namespace tlmoe::train {

struct FinetuneOptions {
  int64_t steps = 2500;
  int64_t batch_size = 8;
  double lr = 3e-5;
  double weight_decay = 0.01;
  double clip_norm = 0.1;
  double label_smoothing = 0.1;
  std::string loss_reduction = "sum";
  double warmup_ratio = 0.06;
  uint64_t seed = 42;              // batch order
  bool reference_compat = false;  // the reference's no-decay name rule (docs/method.md §13.5)
};

// task_rep.ft_steps / ft_lr / ft_batch_size with train.label_smoothing, train.loss_reduction,
// train.seed and reference_compat.
FinetuneOptions finetune_options(const Config& cfg);

// Steps of training `m` with `opt` on `ex` (all examples carry task 0), shared by FT-TextEmb and the
// Fisher adapters: o.steps batches of o.batch_size drawn with o.seed, the label-smoothed loss
// (o.label_smoothing, o.loss_reduction), the global clip over `clip` at o.clip_norm,
// int(o.warmup_ratio · o.steps) warmup then linear decay, dropout on (eval mode after). Returns the
// mean loss of the last min(steps, 10) steps (NaN when steps = 0). Throws DataError naming `what`
// when the loss stops being finite.
double train_steps(model::TLMoEModel& m, const std::vector<data::Example>& ex, AdamW& opt,
                   const std::vector<torch::Tensor>& clip, const FinetuneOptions& o, int64_t pad, int64_t start,
                   const std::string& what);

// Trains every parameter of `m` but the task table on `ex` (all examples carry task 0): AdamW
// (weight decay off for biases and LayerNorms), int(warmup_ratio · steps) warmup then linear
// decay, the global gradient clip, the label-smoothed loss, dropout on. A routed model runs with
// its routing policy as built (the caller mixes experts uniformly). Returns the mean loss of
// the last min(steps, 10) steps (NaN when steps = 0). Throws DataError naming `what` when the
// loss stops being finite.
double finetune_whole_model(model::TLMoEModel& m, const std::vector<data::Example>& ex, const FinetuneOptions& o,
                            int64_t pad, int64_t start, const std::string& what);

// The task's vector from the (fine-tuned) model's encoder, without dropout:
//   variant encoder_mean, pool mean  every example's states averaged over its real tokens, then
//                                    over the examples (tlmoe's TextEmb)
//   variant encoder_mean, pool bos   every example's state at position 0, averaged
//   variant reference,    pool mean  batches of 8 in order, each trimmed to its longest input;
//                                    only the batch's first example: its states at positions
//                                    1 … T−2 of the trimmed batch (pads included when it is the
//                                    shorter one; all T positions when T ≤ 2), averaged; then the
//                                    mean over batches (the reference's "AVG")
//   variant reference,    pool bos   the batch's first example at position 0 ("BOS")
torch::Tensor ft_textemb_vector(model::TLMoEModel& m, const std::vector<data::Example>& ex, int64_t pad, int64_t start,
                                const std::string& variant, const std::string& pool);

}  // namespace tlmoe::train
