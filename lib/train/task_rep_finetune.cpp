#include "train/task_rep_finetune.h"

#include <cmath>

#include "common/error.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/task_rep_compute.h"

namespace tlmoe::train {

FinetuneOptions finetune_options(const Config& cfg) {
  FinetuneOptions o;
  o.steps = cfg.task_rep.ft_steps;
  o.batch_size = cfg.task_rep.ft_batch_size;
  o.lr = cfg.task_rep.ft_lr;
  o.label_smoothing = cfg.train.label_smoothing;
  o.loss_reduction = cfg.train.loss_reduction;
  o.seed = static_cast<uint64_t>(cfg.train.seed);
  o.reference_compat = cfg.reference_compat;
  return o;
}

double train_steps(model::TLMoEModel& m, const std::vector<data::Example>& ex, AdamW& opt,
                   const std::vector<torch::Tensor>& clip, const FinetuneOptions& o, int64_t pad, int64_t start,
                   const std::string& what) {
  LossOptions lo;
  lo.epsilon = o.label_smoothing;
  lo.pad_id = pad;
  lo.reduction = o.loss_reduction;
  data::BatchingOptions bo;
  bo.batch_size = o.batch_size;
  bo.seed = o.seed;
  bo.pad_id = pad;
  bo.decoder_start_id = start;
  data::MultiTaskBatcher batcher(ex, bo);
  const int64_t total = o.steps, warm = warmup_steps(o.warmup_ratio, total);
  double tail = 0;
  int64_t tail_n = 0;
  m->train();
  for (int64_t s = 0; s < total; ++s) {
    data::Batch b = batcher.next();
    model::RouteContext ctx;
    ctx.training = true;
    auto logits = m->forward(b.input_ids, b.input_mask, b.decoder_input_ids, m->routes(b.task_ids, ctx));
    auto loss = label_smoothed_nll(logits, b.target_ids, lo).loss;
    const double v = loss.item<double>();
    if (!std::isfinite(v))
      throw DataError(what, 0, "training for the task representation: the loss is " + std::to_string(v) + " at step " +
                                   std::to_string(s + 1) + " (lower the learning rate?)");
    loss.backward();
    clip_grad_norm(clip, o.clip_norm);
    opt.step(linear_warmup_decay(s, warm, total));
    opt.zero_grad();
    if (s >= total - 10) {
      tail += v;
      ++tail_n;
    }
  }
  m->eval();
  return tail_n ? tail / static_cast<double>(tail_n) : std::nan("");
}

double finetune_whole_model(model::TLMoEModel& m, const std::vector<data::Example>& ex, const FinetuneOptions& o,
                            int64_t pad, int64_t start, const std::string& what) {
  GroupSpec spec;
  spec.lr = o.lr;
  spec.weight_decay = o.weight_decay;
  spec.freeze_task_table = true;
  spec.reference_compat = o.reference_compat;
  auto groups = build_param_groups(*m, spec);  // the router's groups get lr 0: it is not used
  const auto clip = clip_params(groups, *m, /*reference_compat=*/false);
  AdamW opt(groups, AdamWOptions{});
  return train_steps(m, ex, opt, clip, o, pad, start, what);
}

torch::Tensor ft_textemb_vector(model::TLMoEModel& m, const std::vector<data::Example>& ex, int64_t pad, int64_t start,
                                const std::string& variant, const std::string& pool) {
  const bool bos = pool == "bos";
  if (variant != "reference") {
    if (!bos) return textemb_encoder_mean(m, ex, pad, start);
    return mean_over_batches(m, ex, 16, pad, start, [&](const data::Batch& batch) {
      model::RouteContext ctx;
      return m->encode(batch.input_ids, batch.input_mask, m->routes(batch.task_ids, ctx)).select(1, 0);  // [B,D]
    });
  }
  return mean_over_batches(m, ex, 8, pad, start, [&](const data::Batch& batch) {
    model::RouteContext ctx;
    auto first = m->encode(batch.input_ids, batch.input_mask, m->routes(batch.task_ids, ctx))[0];  // [T,D]
    const int64_t T = first.size(0);
    if (bos) return first.slice(0, 0, 1);                               // [1,D]
    auto inner = T > 2 ? first.slice(0, 1, T - 1) : first;              // positions 1 … T-2
    return inner.mean(0, /*keepdim=*/false).unsqueeze(0);               // [1,D]
  });
}

}  // namespace tlmoe::train
