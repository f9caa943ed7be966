// tlmoe adapt --config C [--checkpoint CK | --from-scratch] --out D [--tasks a,b] [--set k=v]...
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "adapt/adapt.h"

namespace tlmoe::app {

void setup_adapt(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string checkpoint, tasks, out;
    bool scratch = false, plain = false;
    int64_t stop_after = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "adapt",
      "Few-shot fine-tuning on unseen tasks (CrossFit protocol): every task x k-shot split x (lr, batch size) "
      "grid point, dev-selected, test-scored; writes results.csv and summary.json. Resumable: run the same "
      "command again to continue an interrupted sweep. Under torchrun or Slurm the grid points are spread over "
      "the processes and rank 0 merges the results (docs/distributed.md).");
  add_config_options(cmd, o->config, true);
  cmd->add_option("--checkpoint", o->checkpoint,
                  "Upstream checkpoint to start from: a TL-MoE or vanilla run's best/ or last/, or hf:DIR, a Hugging "
                  "Face BART directory (e.g. bart-base: the paper's direct fine-tuning baseline)");
  cmd->add_flag("--from-scratch", o->scratch,
                "Start from the model of the config's model section, freshly initialised (or model.init_from): "
                "the direct fine-tuning baseline");
  cmd->add_option("--tasks", o->tasks, "Comma-separated tasks (default: the split file's test tasks)");
  cmd->add_option("--out", o->out, "Output directory (sweep.json, progress.jsonl, results.csv, summary.json)")
      ->required();
  cmd->add_option("--stop-after", o->stop_after,
                  "Stop after N grid points of this invocation, per process (rerun to continue)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--plain", o->plain, "Plain log lines instead of a progress bar");
  cmd->callback([o] {
    if (o->checkpoint.empty() == !o->scratch)
      throw UsageError("adapt: give exactly one of --checkpoint CK or --from-scratch");
    adapt::AdaptOptions a;
    a.cfg = load_config(o->config.sources());
    a.checkpoint = o->checkpoint;
    a.out_dir = o->out;
    a.tasks = split_list(o->tasks);
    a.log = &std::cerr;
    a.plain_progress = o->plain;
    a.stop_after_points = o->stop_after;
    a.launch = train::dist::read_launch_env(a.cfg.dist, train::dist::process_env());  // torchrun / Slurm
    auto r = adapt::adapt(a);
    if (a.launch.rank > 0) return;  // rank 0 reports for the sweep
    std::printf("%-28s %-20s %8s %8s %6s\n", "task", "metric", "mean", "std", "splits");
    for (auto it = r.summary["tasks"].begin(); it != r.summary["tasks"].end(); ++it) {
      const auto& t = it.value();
      auto val = [](const nlohmann::json& j) { return j.is_number() ? j.get<double>() : NAN; };
      std::printf("%-28s %-20s %8.4f %8.4f %6zu\n", it.key().c_str(), t["metric"].get<std::string>().c_str(),
                  val(t["mean"]), val(t["std"]), t["splits"].size());
    }
    std::cout << (r.complete ? "complete" : "incomplete (rerun the same command to continue)") << ": "
              << r.points_run << " grid points run now, " << r.points_reused << " reused, of " << r.points_total
              << "\nresults: " << o->out << "/results.csv, " << o->out << "/summary.json\n";
  });
}

}  // namespace tlmoe::app
