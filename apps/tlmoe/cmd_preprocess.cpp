// tlmoe preprocess --config C [--set k=v]...: tokenizer, token caches and, for
// task_rep.kind = textemb | fisher, the task-representation file.
#include <iostream>
#include <memory>

#include "commands.h"
#include "data/preprocess.h"
#include "train/task_rep_compute.h"

namespace tlmoe::app {

void setup_preprocess(CLI::App& app) {
  auto o = std::make_shared<ConfigOptions>();
  auto* cmd = app.add_subcommand(
      "preprocess",
      "Train or load the tokenizer, build the token caches and the task representations (re-runs only what changed)");
  add_config_options(cmd, *o, true);
  cmd->callback([o] {
    Config cfg = load_config(o->sources());
    preprocess(cfg, std::cout);
    train::compute_task_reps(cfg, std::cout);  // nothing for task_rep.kind = learned
    write_resolved_config(cfg, cache_dir(cfg));
  });
}

}  // namespace tlmoe::app
