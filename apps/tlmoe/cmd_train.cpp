// tlmoe train --config C [--set k=v]... [--run-dir D] [--resume]
#include <memory>

#include "commands.h"

namespace tlmoe::app {

void setup_train(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string run_dir;
    bool resume = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("train", "Multi-task training of TL-MoE models and their baselines");
  add_config_options(cmd, o->config, true);
  cmd->add_option("--run-dir", o->run_dir, "Run directory (checkpoints, metrics.jsonl, routes)");
  cmd->add_flag("--resume", o->resume, "Continue exactly from the run directory's last checkpoint");
  cmd->callback([] { not_implemented("train", "issue #3: the TL-MoE model and trainer"); });
}

}  // namespace tlmoe::app
