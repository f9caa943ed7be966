// tlmoe train --config C [--set k=v]... [--run-dir D] [--resume] [--stop-after N]
#include <iostream>
#include <memory>

#include "commands.h"
#include "train/trainer.h"

namespace tlmoe::app {

void setup_train(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string run_dir = "runs/train";
    bool resume = false;
    int64_t stop_after = 0;
    bool plain = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("train", "Multi-task training of TL-MoE models and their baselines");
  add_config_options(cmd, o->config, true);
  cmd->add_option("--run-dir", o->run_dir, "Run directory (checkpoints best/ last/, metrics.jsonl, routes/)")
      ->capture_default_str();
  cmd->add_flag("--resume", o->resume, "Continue exactly from the run directory's last checkpoint");
  cmd->add_option("--stop-after", o->stop_after,
                  "Stop after N optimizer steps of this invocation (with a checkpoint; --resume continues)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--plain", o->plain, "Plain log lines instead of a progress bar");
  cmd->callback([o] {
    train::TrainOptions t;
    t.cfg = load_config(o->config.sources());
    t.run_dir = o->run_dir;
    t.resume = o->resume;
    t.stop_after = o->stop_after;
    t.log = &std::cerr;
    t.plain_progress = o->plain;
    t.launch = train::dist::read_launch_env(t.cfg.dist, train::dist::process_env());  // torchrun / Slurm
    auto r = train::train(t);
    if (t.launch.rank > 0) return;  // rank 0 reports for the run
    std::cout << "trained to step " << r.step << (r.stopped_early ? " (stopped early; --resume continues)" : "")
              << "; best dev loss " << r.best_dev_loss << " at step " << r.best_step << "\n"
              << "checkpoints: " << o->run_dir << "/best, " << o->run_dir << "/last\n";
  });
}

}  // namespace tlmoe::app
