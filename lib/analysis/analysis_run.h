// The stages of `tlmoe analyze-routes` (analyze.h), internal to lib/analysis. analyze_routes()
// builds an Analysis and runs, in order:
//
//   routes        the checkpoint's routes and the tasks' partitions and categories   (analyze.cpp)
//   statistics    expert x category association per layer, clustering, permutation tests
//   dynamics      route entropy and route changes over the training snapshots
//   compare       route agreement with a second run after aligning experts        (analyze_statistics.cpp)
//   counterfactuals  ablating experts, skill attribution, forced routes     (analyze_counterfactuals.cpp)
//   report        the summary paragraph, stats.json and report.md                    (analyze_report.cpp)
//
// Helpers shared by the stages (formatting, routes, task metadata, statistics) are in
// analyze_util.cpp.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "analysis/analyze.h"
#include "analysis/route_table.h"
#include "analysis/stats.h"
#include "evaluate/checkpoint_eval.h"
#include "io/atomic_file.h"
#include "model/load_model.h"

namespace tlmoe::analysis::detail {

using ojson = nlohmann::ordered_json;

constexpr double kAlpha = 0.05;  // significance level of the per-layer tests and the permutation test

// ---- formatting ----
std::string num(double v);                 // the shortest text that reads back as exactly v (tables)
std::string fmt(double v, int digits = 3);  // `digits` significant digits (prose and Markdown tables)
std::string fmt_p(double p);
std::string csv_row(const std::vector<std::string>& fields);
std::string join(const std::vector<std::string>& v, const std::string& sep);
ojson finite_or_null(double v);
ojson matrix_json(const std::vector<double>& v, std::size_t rows, std::size_t cols);
std::string expert_name(std::size_t e);  // "e1", "e2", ...
std::string display_partition(const std::string& p);
std::string plural(std::size_t n, const std::string& one, const std::string& many);

// ---- the model's routes ----

// The layers of the router's L axis that hold experts (shared vanilla layers ignore their route).
struct RoutedLayers {
  std::vector<std::string> all;      // layer_names(encoder_layers, L)
  std::vector<std::int64_t> index;   // routed positions in `all`
  std::vector<std::string> names;    // their names
};
RoutedLayers routed_layers(model::TLMoEModelImpl& m);

struct TaskRoutes {
  RouteTable t1;   // softmax of the logits at tau = 1 (baselines: their weights)
  RouteTable tau;  // at the checkpoint's tau
};
// The eval-mode routes of every task of the table, in table order, routed layers only.
TaskRoutes compute_routes(model::LoadedModel& lm, const RoutedLayers& rl);
// A table's layers `names`, in that order.
RouteTable select_layers(const RouteTable& t, const std::vector<std::string>& names);

// ---- tasks: partition and category ----
struct TaskMeta {
  std::vector<std::string> partition;  // seen | dev | unseen | "" (not in the split file)
  std::vector<std::string> top, sub;   // "" = uncategorised
  std::string category_source;         // for the report
  std::vector<std::string> not_in_ontology;  // tasks an existing ontology file does not list (warned)
};
TaskMeta task_meta(const Config& cfg, const std::vector<std::string>& tasks, std::ostream& log);

// ---- output bookkeeping ----
struct Output {
  std::filesystem::path dir;
  std::vector<std::string> files;  // relative to dir
  struct Figure {
    std::string title;
    std::vector<std::string> paths;  // one per format, PNG first
  };
  std::vector<Figure> figures;
  struct Table {
    std::string title, path;
  };
  std::vector<Table> tables;

  void write(const std::string& rel, const std::string& bytes);
  void table(const std::string& rel, const std::string& title, const std::string& bytes);
};
std::vector<std::string> figure_extensions(const std::string& formats);

// ---- counterfactual inputs and evaluations ----
std::int64_t task_index(const std::string& name, const std::vector<std::string>& tasks, const std::string& flag,
                        const std::string& checkpoint);
// Eval routes of every task (table order), for finding the tasks whose route an edit changes.
std::vector<model::LayerRoute> eval_routes(model::TLMoEModelImpl& m, const torch::Tensor& ids, double tau,
                                           std::uint64_t seed);
// Tasks (rows of ids) whose weights differ between two route sets.
std::vector<bool> changed_rows(const std::vector<model::LayerRoute>& a, const std::vector<model::LayerRoute>& b);

struct TaskScore {
  std::string metric;
  double score = NAN;
  std::vector<std::int64_t> route;  // hard expert per layer (0-based), as evaluate_checkpoint reports it
};
using Scores = std::map<std::string, TaskScore>;
// The tasks decoded with the checkpoint, the routes changed by `edit`.
Scores run_eval(const AnalyzeOptions& o, const std::vector<std::string>& tasks, evaluate::RouteEdit edit,
                std::ostream& log, bool forward_log);
std::string route_text(const std::vector<std::int64_t>& route, const RoutedLayers& rl);

// ---- expert weights (for --compare) ----
// [E,E] cosine similarity between A's and B's experts of one layer, each expert taken relative to
// the mean of its layer's experts.
std::vector<double> expert_weight_similarity(model::TLMoEModelImpl& a, model::TLMoEModelImpl& b, std::int64_t l,
                                             const std::string& layer, const std::string& compare);
std::filesystem::path run_dir_of(const std::string& checkpoint);

// ---- statistics helpers ----
struct Agreement {
  double nmi = NAN, ari = NAN;
  std::vector<int> clusters;
  bool ok = false;
  std::string skipped;
};
Agreement cluster_agreement(const std::vector<std::vector<double>>& points, const Labeling& labels);

struct Permutation {
  PermutationTestResult r;
  bool ok = false;
  std::string skipped;
};
Permutation permutation(const std::vector<std::vector<double>>& points, const Labeling& labels, const Config& cfg);
ojson agreement_json(const Agreement& a);
ojson permutation_json(const Permutation& p);

// The cell of largest lift for one category (hard counts, at least 2 tasks in the cell), over `layers`.
struct TopLift {
  std::string category, layer;
  std::size_t expert = 0;
  double lift = NAN, p_given = NAN, count = 0, row_total = 0;
  bool found = false;
};
TopLift top_lift(const std::vector<LayerAssociation>& assoc, const std::vector<std::size_t>& layers, std::size_t c);

// The permutation p-value of one layer's chi-square statistic (hard choice x category).
double chi_square_permutation_p(const RouteTable& t, std::size_t layer, const Labeling& labels,
                                std::int64_t permutations, std::uint64_t seed);

// ---- the run ----

struct CfContext;  // analyze_counterfactuals.cpp

// One analysis: what the stages share. A struct of plain fields: each stage reads what the
// earlier ones computed and adds its own.
struct Analysis {
  explicit Analysis(const AnalyzeOptions& options);
  AnalysisReport run();

  // stages
  void check_counterfactual_inputs();
  void load_routes();
  void write_routes();
  void route_figures();
  void statistics();
  void association_tests();
  void clustering();
  void dynamics();
  void compare_runs();
  void counterfactuals();
  void cf_ablation(CfContext& c);
  void cf_attribution(CfContext& c);
  void cf_force(CfContext& c);
  std::string summary_text();
  void write_report(const std::string& summary);

  // helpers
  void figure(const std::string& stem, const std::string& title, const std::function<void(const std::filesystem::path&)>& draw);
  std::size_t count_part(const std::string& p) const;
  std::string category_of(const std::string& task) const;   // its category for display
  std::string partition_of(const std::string& task) const;  // its partition for display
  evaluate::RouteEdit ablation_edit(const CfContext& c, std::vector<ExpertRef> refs) const;
  std::vector<std::string> changed_by(const CfContext& c, const std::vector<ExpertRef>& refs);

  // the inputs
  const AnalyzeOptions& o;
  const Config& cfg;
  std::ostream& log;
  model::LoadedModel lm;
  model::TLMoEModelImpl& m;
  RoutedLayers rl;
  std::int64_t E = 0;
  std::size_t n = 0;
  // counterfactual requests (checked before any heavy work)
  std::vector<ExpertRef> ablate, attribution;
  std::vector<std::pair<std::string, std::string>> force;  // (task, source of its route)
  bool counterfactual = false;
  // routes and task metadata, in ontology order
  TaskMeta meta0;
  TaskRoutes raw;
  RouteTable t1, tt;
  std::vector<std::string> partition, top, sub, shown_cat;
  std::map<std::string, std::size_t> row_of;  // task -> row of t1 / tt
  // outputs
  Output out;  // out.dir: the staged folder until run() moves everything into --out
  std::optional<io::StagingDir> staging;
  std::vector<std::string> exts;
  ojson stats;
  // statistics against the categories
  std::vector<std::size_t> cat_rows;
  RouteTable ct1;                        // the routes of the categorised tasks (tau = 1)
  std::vector<std::string> cat_names;
  Labeling labels;
  bool have_categories = false;
  std::vector<LayerAssociation> hard_assoc, soft_assoc;
  std::vector<std::size_t> significant;  // layers whose permutation p < kAlpha
  std::vector<double> layer_perm_p;      // per layer, chi_square_permutation_p
  Agreement clusters;
  Permutation perm;
  std::vector<TopLift> lifts;
  // sentences of the summary from the later stages
  std::string dynamics_text, compare_text, cf_text;
};

}  // namespace tlmoe::analysis::detail
