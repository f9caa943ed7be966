// tlmoe adapt --config C --checkpoint CK [--tasks a,b] [--run-dir D]
#include <memory>

#include "commands.h"

namespace tlmoe::app {

void setup_adapt(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string checkpoint, tasks, run_dir;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("adapt", "Few-shot fine-tuning on unseen tasks (CrossFit protocol)");
  add_config_options(cmd, o->config, true);
  cmd->add_option("--checkpoint", o->checkpoint, "Upstream checkpoint to start from");
  cmd->add_option("--tasks", o->tasks, "Comma-separated tasks (default: the split's test tasks)");
  cmd->add_option("--run-dir", o->run_dir, "Run directory (results.csv, summary.json)");
  cmd->callback([] { not_implemented("adapt", "issue #4: generation, metrics and few-shot adaptation"); });
}

}  // namespace tlmoe::app
