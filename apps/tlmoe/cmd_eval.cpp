// tlmoe eval --config C --checkpoint CK [--tasks a,b]
// tlmoe eval compare RUN_A RUN_B
#include <memory>

#include "commands.h"

namespace tlmoe::app {

void setup_eval(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string checkpoint, tasks, run_a, run_b;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("eval", "Zero-shot evaluation of unseen tasks and test scores of seen tasks");
  add_config_options(cmd, o->config, false);
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint to evaluate");
  cmd->add_option("--tasks", o->tasks, "Comma-separated tasks");
  auto* compare = cmd->add_subcommand("compare", "Per-task scores, relative gains and ARG of RUN_A over RUN_B");
  compare->add_option("run_a", o->run_a, "Run directory of the method")->required();
  compare->add_option("run_b", o->run_b, "Run directory of the baseline")->required();
  compare->callback([] { not_implemented("eval compare", "issue #4: ARG and significance tests"); });
  cmd->callback([cmd] {
    if (cmd->got_subcommand("compare")) return;
    not_implemented("eval", "issue #4: zero-shot and seen-task evaluation");
  });
}

}  // namespace tlmoe::app
