// One setup_<cmd>() per subcommand file. Each registers its CLI11 subcommand and a callback;
// callbacks throw (tlmoe::InputError -> exit 2, anything else -> exit 1) and main() maps them.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "config/config.h"

namespace tlmoe::app {

// --config FILE and repeated --set section.key=value, shared by the commands that take a config.
struct ConfigOptions {
  std::string file;
  std::vector<std::string> overrides;
  ConfigSources sources() const { return ConfigSources{file, overrides}; }
};
void add_config_options(CLI::App* cmd, ConfigOptions& opts, bool required);

// Writes config.resolved.yaml into `run_dir` (atomically).
void write_resolved_config(const Config& cfg, const std::string& run_dir);


void setup_gym(CLI::App& app);
void setup_preprocess(CLI::App& app);
void setup_train(CLI::App& app);
void setup_adapt(CLI::App& app);
void setup_eval(CLI::App& app);
void setup_analyze_routes(CLI::App& app);
void setup_bench(CLI::App& app);
void setup_export(CLI::App& app);
void setup_config(CLI::App& app);

}  // namespace tlmoe::app
