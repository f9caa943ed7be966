// tlmoe gym --out DIR [--seed N]: writes the embedded benchmark in the CrossFit layout.
#include <chrono>
#include <iostream>
#include <memory>

#include "commands.h"
#include "data/gym.h"

namespace tlmoe::app {

void setup_gym(CLI::App& app) {
  auto o = std::make_shared<gym::GymOptions>();
  auto* cmd = app.add_subcommand(
      "gym", "Generate the embedded benchmark (CrossFit layout, splits, tasks.json, ontology.json)");
  cmd->add_option("--out", o->out, "Output directory (replaced if it holds an earlier gym)")->required();
  cmd->add_option("--seed", o->seed, "Seed; the same seed gives byte-identical files")->capture_default_str();
  cmd->callback([o] {
    auto t0 = std::chrono::steady_clock::now();
    gym::GymSummary summary = gym::generate(*o);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << gym::format_task_table(summary);
    std::cout << "wrote " << summary.tasks.size() << " tasks to " << o->out.string() << " in "
              << secs << " s\n";
  });
}

}  // namespace tlmoe::app
