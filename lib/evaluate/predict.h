// Generation-based evaluation shared by train (dev score), adapt and eval: the generation and
// metric settings of a config, routes for decoding, batched prediction through model::generate,
// and scoring an evaluation set (evaluate/eval_set.h) with the task's CrossFit metric.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/batching.h"
#include "evaluate/eval_set.h"
#include "metrics/metrics.h"
#include "model/generate.h"
#include "model/tlmoe_model.h"
#include "text/tokenizer.h"

namespace tlmoe::evaluate {

// Generation settings of the eval section with the model's special tokens. decoder_start per
// model.decoder_start; forced BOS/EOS per eval.forced_bos / eval.forced_eos.
model::GenerationOptions generation_options(const Config& cfg, int64_t bos, int64_t eos, int64_t pad);
metrics::MetricOptions metric_options(const Config& cfg);

// Routes for a batch of task ids [B] (one entry per layer; empty for a model without experts).
using RouteFn = std::function<std::vector<model::LayerRoute>(const torch::Tensor& task_ids)>;

// Eval-mode routes of the model's own router or baseline at temperature tau (deterministic:
// argmax for gumbel selections, docs/method.md §13.3; a seeded generator for random baselines).
// A model whose policy samples at evaluation under reference_compat draws one route per task for
// the RouteFn's lifetime (soft gumbel: its argmax expert, weight 1, sparse), as the reference.
RouteFn model_routes(model::TLMoEModel m, double tau, uint64_t seed);

// Decodes every example (batches of similar input length), returns the decoded texts in input
// order: special tokens skipped, surrounding whitespace stripped. The model is put in eval mode
// and left in it.
std::vector<std::string> predict(model::Seq2SeqImpl& m, const std::vector<data::Example>& examples, const RouteFn& routes,
                                 const text::Tokenizer& tok, const model::GenerationOptions& g, int64_t batch_size,
                                 const torch::Device& dev);

struct TaskScore {
  std::string task, metric;
  double score = 0;          // NaN possible (Pearson on constant or unparsable predictions)
  std::size_t examples = 0;
  std::size_t unparsable = 0;
};

TaskScore score_predictions(const EvalSet& set, const std::vector<std::string>& predictions,
                            const metrics::MetricOptions& mo);

}  // namespace tlmoe::evaluate
