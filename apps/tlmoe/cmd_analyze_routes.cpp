// tlmoe analyze-routes --checkpoint CK [--ontology F] --out D
#include <memory>

#include "commands.h"

namespace tlmoe::app {

void setup_analyze_routes(CLI::App& app) {
  struct Opts {
    std::string checkpoint, ontology, out;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("analyze-routes", "What the router learned: figures, tables, statistics");
  cmd->add_option("--checkpoint", o->checkpoint, "TL-MoE checkpoint")->required();
  cmd->add_option("--ontology", o->ontology, "Ontology json (category -> sub-category -> tasks)");
  cmd->add_option("--out", o->out, "Output folder (report.md, figures, tables)")->required();
  cmd->callback([] { not_implemented("analyze-routes", "issue #5: routing analysis"); });
}

}  // namespace tlmoe::app
