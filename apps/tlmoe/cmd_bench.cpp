// tlmoe bench dispatch|train|generate [--config C] [--out FILE]
#include <iostream>
#include <memory>

#include "commands.h"
#include "io/atomic_file.h"
#include "train/bench.h"

namespace tlmoe::app {

void setup_bench(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string what;
    std::string out;
    train::BenchTrainOptions train;
    train::BenchGenerateOptions generate;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "Throughput benchmarks, reported as ratios measured in one run");
  cmd->add_option("what", o->what, "dispatch | train | generate")
      ->required()
      ->check(CLI::IsMember({"dispatch", "train", "generate"}));
  add_config_options(cmd, o->config, false);
  cmd->add_option("--out", o->out, "Also write the report as JSON to this file");
  cmd->add_option("--steps", o->train.steps, "Timed steps per variant and round (train)")->capture_default_str();
  cmd->add_option("--rounds", o->train.rounds, "Interleaved rounds; the best counts (train)")->capture_default_str();
  cmd->add_option("--batches", o->generate.batches, "Timed batches per variant and round (generate)")
      ->capture_default_str();
  cmd->callback([o] {
    if (o->what == "dispatch") not_implemented("bench dispatch", "issue #6: dispatch kernels and benchmarks");
    Config cfg = load_config(o->config.sources());
    o->generate.rounds = o->train.rounds;
    auto rep = o->what == "train" ? train::bench_train(cfg, o->train, std::cerr)
                                  : train::bench_generate(cfg, o->generate, std::cerr);
    std::cout << train::format_bench_table(rep);
    if (!o->out.empty()) io::write_file_atomic(o->out, rep.dump(2) + "\n");
  });
}

}  // namespace tlmoe::app
