// tlmoe bench dispatch|train|generate [--config C]
#include <memory>

#include "commands.h"

namespace tlmoe::app {

void setup_bench(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string what;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "Throughput benchmarks, reported as ratios measured in one run");
  cmd->add_option("what", o->what, "dispatch | train | generate")
      ->required()
      ->check(CLI::IsMember({"dispatch", "train", "generate"}));
  add_config_options(cmd, o->config, false);
  cmd->callback([o] {
    if (o->what == "train") not_implemented("bench train", "issue #3: the TL-MoE model and trainer");
    not_implemented("bench " + o->what, "issue #6: dispatch kernels and benchmarks");
  });
}

}  // namespace tlmoe::app
