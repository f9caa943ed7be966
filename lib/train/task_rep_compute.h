// Computing task representations (docs/method.md §5, §13.14, §13.15), run by `tlmoe preprocess` when
// task_rep.kind is textemb, ft_textemb or fisher. All start from a tlmoe checkpoint
// (task_rep.source_checkpoint, typically an upstream vanilla run) trained with the same tokenizer.
//
//   textemb  the mean over non-pad positions of the encoder's last hidden states, averaged over
//            every k-shot train input of the task (all splits); a task without k-shot files
//            uses its full train file. A routed source mixes its experts uniformly.
//   ft_textemb  a copy of the source fine-tuned as a whole on the task's first k-shot split
//            (train/task_rep_finetune.h), then its encoder's states pooled over that split.
//   fisher   bottleneck adapters (task_rep.fisher_adapter_dim, small random init) are trained
//            alone on the task's first k-shot split (string order, as CrossFit sorts: seed 100
//            of the standard seeds) for task_rep.fisher_steps steps; then, without dropout, the
//            squared gradient of every adapter weight matrix under the summed label-smoothed
//            loss of each train example, averaged over examples (the empirical diagonal Fisher).
//            Needs a dense (model.experts = 1) source.
// Projection: when task_rep.dim is below the raw size, PCA is fitted on the upstream ("train")
// tasks' raw vectors and applied to every task; the result is scaled so the upstream entries
// have unit standard deviation (the learned table's N(0,1) scale). The raw vectors, the PCA
// mean and components are saved in the file with the matrix, so later tasks use the same fit.
// The output is reused when nothing it depends on changed (source checkpoint, token caches,
// options): the file records a key of those.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>

#include "config/config.h"
#include "data/batching.h"
#include "model/tlmoe_model.h"

namespace tlmoe::train {

struct TaskRepReport {
  std::filesystem::path path;
  bool reused = false;
  int64_t tasks = 0, raw_dim = 0, dim = 0;
  double explained_variance = 1.0;  // of the PCA on upstream tasks (1 when not projected)
};

// The mean over the examples of per-example vectors [B,D] that `per_batch` computes on batches of
// `size` examples in order (each collated: trimmed to its longest input), in eval mode, without
// gradients. `per_batch` may return fewer rows than the batch holds (one per batch, say): the
// mean is over all rows returned.
torch::Tensor mean_over_batches(model::TLMoEModel& m, const std::vector<data::Example>& ex, size_t size, int64_t pad,
                                int64_t start, const std::function<torch::Tensor(const data::Batch&)>& per_batch);

// tlmoe's TextEmb of one task (task_rep.textemb_variant: encoder_mean): the encoder's last states
// averaged over each input's real tokens, then over the inputs.
torch::Tensor textemb_encoder_mean(model::TLMoEModel& m, const std::vector<data::Example>& ex, int64_t pad, int64_t start);

// The reference's TextEmb of one task (task_rep.textemb_variant: reference, docs/method.md §13.14):
// batches of 8 examples in order, each trimmed to its longest input; the decoder reads the input
// shifted right behind `start` (pads included, no padding mask) over the encoder's states; its last
// states are averaged over every position, pads included, and those vectors over the examples.
torch::Tensor textemb_reference(model::TLMoEModel& m, const std::vector<data::Example>& ex, int64_t pad, int64_t start);

// "encoder_mean" or "reference": task_rep.textemb_variant, "reference" under reference_compat
// when the key is not set.
std::string textemb_variant(const Config& cfg);

// Requires the preprocess manifest (run data::preprocess first). Throws ConfigError for a
// missing source checkpoint or impossible dimensions, DataError for a mismatched checkpoint.
TaskRepReport compute_task_reps(const Config& cfg, std::ostream& log);

}  // namespace tlmoe::train
