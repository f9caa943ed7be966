// `tlmoe analyze-routes`: what the router of a checkpoint learned (docs/method.md §12).
//
// For every task of the checkpoint's task table (seen = the split file's train list, dev, and
// unseen = test) and every routed layer: the distribution over the experts at τ = 1 and at the
// checkpoint's τ (softmax of the router's logits), and the hard choice; figures, statistics
// against the task categories (ontology.json, else tasks.json), an optional comparison with a
// second run after aligning its experts, and counterfactual evaluations (an expert ablated, a
// task forced onto another task's route) through evaluate::evaluate_checkpoint. Everything is written
// to one folder with a report.md that links it; docs/analyze-routes.md lists the files.
//
// This layer loads models (LibTorch); the statistics (stats.h) and figures (plot.h) it calls are
// plain C++. Errors caused by the user's input are tlmoe::UsageError / DataError / ConfigError.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "analysis/route_table.h"
#include "config/config.h"
#include "model/tlmoe_model.h"

namespace tlmoe::analysis {

// ---- counterfactual routes ---------------------------------------------------------------------
// One expert of one layer, as indices into the router's axes.
struct ExpertRef {
  std::int64_t layer = 0;   // 0-based over the router's L axis (encoder layers first)
  std::int64_t expert = 0;  // 0-based
  bool operator==(const ExpertRef&) const = default;
};

// "LAYER:EXPERT" as the command line writes it: LAYER is a layer name of `layers` ("enc1",
// "dec2", ...) or its 1-based position in that list; EXPERT is 1-based, optionally written "e2".
// UsageError naming `flag` and the valid range for anything else.
ExpertRef parse_expert_ref(const std::string& text, const std::vector<std::string>& layers, std::int64_t experts,
                           const std::string& flag);
// "enc1:e2" (1-based expert, as the figures and tables name experts).
std::string expert_ref_name(const ExpertRef& r, const std::vector<std::string>& layers);

// Eval-mode routes of `task_ids` [B] with the experts in `ablated` removed: for each layer that
// has an ablated expert, the router's logits [B,E] get -inf at those experts and go through the
// model's selection at eval (routing.selection, τ = `tau`, no noise: softmax renormalises over
// the remaining experts; gumbel_st / topk pick the next best experts by logit), and that layer's
// LayerRoute is replaced (weights, indices when hard, sparse = hard, as TLMoEModelImpl::routes
// at eval). Every other layer's route is returned unchanged. `routes` are the task_ids' eval
// routes (one per layer). Needs a learned router; std::invalid_argument for an index out of
// range or a layer left without experts.
std::vector<model::LayerRoute> ablate_experts(model::TLMoEModelImpl& m, const torch::Tensor& task_ids,
                                              std::vector<model::LayerRoute> routes,
                                              const std::vector<ExpertRef>& ablated, double tau);

// Eval-mode routes of task `source` (its row of the task table) for a batch of `batch` examples
// on `device`: what another task uses when forced onto `source`'s route. Random baselines draw
// from a generator seeded with `seed`.
std::vector<model::LayerRoute> task_routes(model::TLMoEModelImpl& m, std::int64_t source, std::int64_t batch,
                                           const torch::Device& device, double tau, std::uint64_t seed);

// ---- the analysis ----------------------------------------------------------------------------
// The config the analysis reads (data.* for tasks.json / ontology / splits / the preprocess cache,
// eval.* for counterfactual decoding, analysis.*): `sources.file` when given, else the config
// saved in the checkpoint's meta.json; --set overrides apply on top in both cases.
Config analysis_config(const ConfigSources& sources, const std::string& checkpoint);

struct AnalyzeOptions {
  Config cfg;                        // analysis_config()
  std::string checkpoint;            // a run's best/ or last/
  std::string out_dir;
  std::string compare;               // "" or a second checkpoint with the same layers and experts
  std::vector<std::string> ablate;   // "LAYER:EXPERT", ablated together (or one at a time with attribution)
  std::vector<std::string> force;    // "TASK=OTHER": TASK decodes with OTHER's route
  bool attribution = false;          // one evaluation per expert of `ablate` (every routed expert if empty)
  std::int64_t max_examples = 40;    // test examples decoded per task in counterfactuals (0 = all)
  std::vector<std::string> tasks;    // tasks of the ablation / attribution evaluations; "" = every task
  std::vector<std::string> dynamics_tasks;  // tasks drawn as their own lines in dynamics_entropy
  std::ostream* log = nullptr;       // progress (std::cerr when null)
};

struct AnalysisReport {
  nlohmann::ordered_json stats;      // what stats.json holds
  std::string summary;               // the generated summary paragraph of report.md
  std::vector<std::string> files;    // everything written, relative to out_dir
};

// Runs the analysis and writes out_dir (see docs/analyze-routes.md). UsageError for a vanilla
// (model.experts = 1) checkpoint, a bad --ablate / --force / --tasks value or an incompatible
// --compare checkpoint; DataError for unreadable data files.
AnalysisReport analyze_routes(const AnalyzeOptions& options);

}  // namespace tlmoe::analysis
