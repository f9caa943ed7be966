// tlmoe analyze-routes --checkpoint CK --out D [--config C] [--set k=v]... [--ontology F]
//                      [--compare CK2] [--ablate L:E]... [--force T=U]... [--attribution]
//                      [--max-examples N] [--tasks a,b] [--dynamics-tasks a,b]
#include <iostream>
#include <memory>
#include <sstream>

#include "analysis/analyze.h"
#include "commands.h"
#include "common/strings.h"

namespace tlmoe::app {

void setup_analyze_routes(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string checkpoint, ontology, out, compare, tasks, dynamics_tasks;
    std::vector<std::string> ablate, force;
    bool attribution = false;
    int64_t max_examples = 40;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "analyze-routes",
      "What the router learned: per-task routes (CSV/JSON), figures, expert-category statistics, clustering "
      "against the ontology, comparison with another run, counterfactual routes; report.md links everything");
  cmd->footer(
      "\nWithout --config the checkpoint's own config tells where the data is (tasks.json, ontology.json,\n"
      "splits.json, the preprocess cache); --set overrides either. Settings: analysis.formats (png|svg|both),\n"
      "analysis.permutations, analysis.seed, analysis.ontology.\n"
      "Counterfactuals decode each task's test file (the first --max-examples examples):\n"
      "  --ablate enc2:3           expert 3 of encoder layer 2 is removed: its logit becomes -inf and the\n"
      "                            route is re-selected (softmax renormalises; gumbel_st/topk take the next best)\n"
      "  --ablate 4:e1 --ablate dec1:2   ablated together (layers by name or 1-based index, enc then dec)\n"
      "  --attribution             one evaluation per --ablate expert (every expert when none is given):\n"
      "                            the task x expert skill-attribution table of metric drops\n"
      "  --force rc_who=topic_news rc_who decodes with topic_news's route\n"
      "Example:\n"
      "  tlmoe analyze-routes --checkpoint runs/quickstart/tlmoe/best --out runs/quickstart/analysis\n");
  add_config_options(cmd, o->config, false);
  cmd->add_option("--checkpoint", o->checkpoint, "TL-MoE checkpoint to analyse (a run's best/ or last/)")->required();
  cmd->add_option("--out", o->out, "Output folder: report.md, stats.json, routes.csv/json, figures/, tables/")
      ->required();
  cmd->add_option("--ontology", o->ontology,
                  "Ontology json (category -> sub-category -> tasks); default analysis.ontology, else data.ontology, "
                  "with tasks.json categories for tasks it lacks");
  cmd->add_option("--compare", o->compare,
                  "A second checkpoint with the same layers and experts: align its experts (Hungarian matching on "
                  "expert-weight similarity) and report route agreement per layer");
  cmd->add_option("--ablate", o->ablate, "LAYER:EXPERT to remove from routing (repeatable), e.g. enc1:2 or 3:e1");
  cmd->add_option("--force", o->force, "TASK=OTHER_TASK: TASK decodes with OTHER_TASK's route (repeatable)");
  cmd->add_flag("--attribution", o->attribution,
                "Ablate each --ablate expert on its own (every routed expert when --ablate is not given) and write "
                "the task x expert skill-attribution table");
  cmd->add_option("--max-examples", o->max_examples,
                  "Test examples decoded per task in counterfactual evaluations (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--dynamics-tasks", o->dynamics_tasks,
                  "Comma-separated tasks drawn as their own lines in figures/dynamics_entropy, next to the category "
                  "means and bands");
  cmd->add_option("--tasks", o->tasks,
                  "Comma-separated tasks for --ablate / --attribution (default: every task of the split file)");
  cmd->callback([o] {
    ConfigOptions c = o->config;
    if (!o->ontology.empty()) c.overrides.push_back("analysis.ontology=" + o->ontology);
    analysis::AnalyzeOptions a;
    a.cfg = analysis::analysis_config(c.sources(), o->checkpoint);
    a.checkpoint = o->checkpoint;
    a.out_dir = o->out;
    a.compare = o->compare;
    a.ablate = o->ablate;
    a.force = o->force;
    a.attribution = o->attribution;
    a.max_examples = o->max_examples;
    a.tasks = split_list(o->tasks);
    a.dynamics_tasks = split_list(o->dynamics_tasks);
    a.log = &std::cerr;
    const analysis::AnalysisReport r = analysis::analyze_routes(a);
    std::cout << r.summary << "\n\n";
    const auto& s = r.stats;
    if (s.contains("clustering") && s["clustering"].contains("nmi"))
      std::cout << "NMI " << s["clustering"]["nmi"].get<double>() << "  ARI " << s["clustering"]["ari"].get<double>();
    if (s.contains("permutation_test") && s["permutation_test"].contains("p_value"))
      std::cout << "  permutation p " << s["permutation_test"]["p_value"].get<double>();
    if (s.contains("association") && s["association"].contains("significant_layers")) {
      std::cout << "  significant layers (permutation p < 0.05):";
      const auto& sig = s["association"]["significant_layers"];
      if (sig.empty()) std::cout << " none";
      for (const auto& l : sig) std::cout << " " << l.get<std::string>();
    }
    std::cout << "\nreport: " << o->out << "/report.md (" << r.files.size() << " files)\n";
  });
}

}  // namespace tlmoe::app
