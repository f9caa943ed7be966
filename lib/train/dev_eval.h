// What `tlmoe train` evaluates while it trains (docs/method.md §6.7): the teacher-forced dev
// loss, the generation-based dev score over the upstream tasks' dev files, and the routes of every
// task (routes/step_N.json).
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/batching.h"
#include "evaluate/eval_set.h"
#include "model/tlmoe_model.h"
#include "text/tokenizer.h"
#include "train/dist.h"
#include "train/loss.h"
#include "train/upstream_data.h"

namespace tlmoe::train {

data::Batch to_device(data::Batch b, const torch::Device& d);

// Teacher-forced loss per target token over evaluation batches (no dropout, deterministic routes),
// over all of them and per task id (NaN for a task without dev targets; NaN overall without any).
// With several ranks, rank r takes batches r, r + W, ... and the sums are all-reduced.
struct DevLoss {
  double mean = NAN;
  std::vector<double> per_task;  // indexed by task id, num_tasks entries
};
DevLoss eval_loss(model::TLMoEModel& m, const std::vector<data::Batch>& batches, const LossOptions& lo, double tau,
                  const torch::Device& dev, dist::Communicator& comm, int64_t num_tasks);

// Routes of every task at the current temperature and at tau = 1, as data (docs/method.md §12).
nlohmann::json routes_json(model::TLMoEModel& m, const std::vector<std::string>& tasks, double tau, int64_t step);

// The dev files the generation-based score decodes (docs/method.md §6.7, §13.9): per upstream task its
// {task}_full_dev.tsv (data.upstream_source = full) or its first k-shot split's dev file.
std::vector<evaluate::EvalSet> upstream_dev_sets(const Config& cfg, const UpstreamData& data);

struct DevScore {
  double mean = NAN;
  int64_t nan_tasks = 0;
  nlohmann::json per_task = nlohmann::json::object();
  // Per task: {"top_share", "distinct", "gold_top_share", "collapsed", "examples", "top"} of its
  // predictions (metrics::prediction_spread; "top" only for the tasks rank 0 decoded).
  nlohmann::json spread = nlohmann::json::object();
  std::vector<std::string> collapsed;  // tasks whose predictions collapsed, sorted
  double mean_top_share = NAN;         // mean over the dev tasks of the most frequent prediction's share
};

// Mean over the dev tasks of their metric (NaN scores count as 0 and are counted), with the spread
// of each task's predictions (collapse: train.collapse_threshold). With several ranks, rank r
// decodes tasks r, r + W, ... and the per-task numbers are all-reduced.
DevScore dev_score(model::TLMoEModel& m, const std::vector<evaluate::EvalSet>& sets, const text::Tokenizer& tok,
                   const Config& cfg, const UpstreamData& data, double tau, const torch::Device& dev,
                   dist::Communicator& comm);

}  // namespace tlmoe::train
