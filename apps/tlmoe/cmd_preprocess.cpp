// tlmoe preprocess --config C [--set k=v]...: tokenizer, token caches (task representations
// join with the model issue).
#include <iostream>
#include <memory>

#include "commands.h"
#include "data/preprocess.h"

namespace tlmoe::app {

void setup_preprocess(CLI::App& app) {
  auto o = std::make_shared<ConfigOptions>();
  auto* cmd = app.add_subcommand(
      "preprocess", "Train or load the tokenizer and build the token caches (re-runs only what changed)");
  add_config_options(cmd, *o, true);
  cmd->callback([o] {
    Config cfg = load_config(o->sources());
    preprocess(cfg, std::cout);
    write_resolved_config(cfg, cache_dir(cfg));
  });
}

}  // namespace tlmoe::app
