// tlmoe config show C [--set k=v]...   print the resolved config
// tlmoe config docs                    print docs/config.md (generated from the declarations)
#include <iostream>
#include <memory>

#include "commands.h"

namespace tlmoe::app {

void setup_config(CLI::App& app) {
  auto* cmd = app.add_subcommand("config", "Inspect configurations");
  cmd->require_subcommand(1);

  auto opts = std::make_shared<ConfigOptions>();
  auto* show = cmd->add_subcommand("show", "Print the resolved config (defaults < base < file < --set) as YAML");
  show->add_option("config", opts->file, "YAML config file (omit for the defaults)");
  show->add_option("--set", opts->overrides, "Override one key: --set section.key=value (repeatable)");
  show->callback([opts] { std::cout << to_yaml(load_config(opts->sources())); });

  auto* docs = cmd->add_subcommand("docs", "Print the configuration reference (docs/config.md) in Markdown");
  docs->callback([] { std::cout << config_reference_markdown(); });
}

}  // namespace tlmoe::app
