// `tlmoe eval`: a trained checkpoint decodes tasks without any training (docs/method.md §9, §13.17).
//   unseen tasks (the split file's "test" or "dev" list): zero-shot. The task's route comes from
//     its representation through the trained router (the representation of a textemb/fisher
//     table is computed from the task's inputs only); a vanilla model just decodes.
//   seen tasks ("train"): the multi-task model's test score on tasks it was trained on.
// Each task's test file of its first k-shot split (CrossFit's test file is the same for every
// split; a seen task without k-shot files uses its {task}_full_dev.tsv) is decoded with the eval section's settings and scored with the task's metric.
//
// Output (out_dir): summary.json in adapt's layout (tasks -> {metric, mean, std, splits: {"test":
// {"seed": 0, "test": score}}, partition, examples, unparsable, route}), so `tlmoe eval compare`
// reads zero-shot and few-shot results alike; predictions/{task}.jsonl (input, prediction, golds).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/tlmoe_model.h"

namespace tlmoe::evaluate {

// Replaces the routes of one task (analysis counterfactuals): gets the task's eval-mode routes
// for a batch and returns the routes to use.
using RouteEdit = std::function<std::vector<model::LayerRoute>(const std::string& task, model::TLMoEModelImpl& m,
                                                               std::vector<model::LayerRoute> routes)>;

struct CheckpointEvalOptions {
  Config cfg;                       // data and eval sections (the model comes from the checkpoint)
  std::string checkpoint;
  std::vector<std::string> tasks;   // explicit tasks; when empty, every task of `partitions`
  std::vector<std::string> partitions = {"test"};  // of the split file: train (seen), dev, test
  std::string out_dir;              // "" = write nothing
  int64_t max_examples = 0;         // > 0: the first N test examples per task
  RouteEdit route_edit;             // optional
  std::ostream* log = nullptr;
};

// Returns the summary (also written to out_dir/summary.json when out_dir is set).
nlohmann::json evaluate_checkpoint(const CheckpointEvalOptions& opts);

// The summary as an aligned text table (task, partition, metric, score, examples).
std::string format_eval_summary(const nlohmann::json& summary);

}  // namespace tlmoe::evaluate
