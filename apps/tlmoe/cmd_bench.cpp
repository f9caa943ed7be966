// tlmoe bench dispatch|train|generate [--config C] [--out FILE]
#include <iostream>
#include <memory>

#include "commands.h"
#include "io/atomic_file.h"
#include "bench/bench.h"

namespace tlmoe::app {

void setup_bench(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string what;
    std::string out;
    bench::BenchTrainOptions train;
    bench::BenchGenerateOptions generate;
    bench::BenchDispatchOptions dispatch;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "Throughput benchmarks, reported as ratios measured in one run");
  cmd->add_option("what", o->what, "dispatch | train | generate")
      ->required()
      ->check(CLI::IsMember({"dispatch", "train", "generate"}));
  add_config_options(cmd, o->config, false);
  cmd->add_option("--out", o->out, "Also write the report as JSON to this file");
  cmd->add_option("--steps", o->train.steps, "Timed optimizer steps per variant and round, each of train.grad_accum micro-batches of train.batch_size (train)")->capture_default_str();
  cmd->add_option("--warmup", o->train.warmup_steps,
                  "Untimed steps and forward passes before each variant's timed blocks (train)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--rounds", o->train.rounds, "Interleaved rounds; the best counts (train)")->capture_default_str();
  cmd->add_option("--batches", o->generate.batches, "Timed batches per variant and round (generate)")
      ->capture_default_str();
  cmd->add_option("--src-len", o->train.src_len, "Source tokens per synthetic example (train, generate)")
      ->capture_default_str();
  cmd->add_option("--tgt-len", o->train.tgt_len, "Target tokens per synthetic example (train)")->capture_default_str();
  cmd->add_option("--peak-tflops", o->train.peak_tflops,
                  "The device's peak TFLOP/s (e.g. 989 for H200 dense bf16): report model FLOP utilisation (train)");
  cmd->add_flag("--no-dense", o->train.skip_dense,
                "Leave the dense MoE variant out: vanilla and sparse only (train; large models on CPU)");
  cmd->add_option("--shapes", o->dispatch.shapes,
                  "Shapes as \"B,S,D,m,K;...\" (dispatch; default: 8,64,256,3,1 up to the paper's 32,512,768,3,1 and larger)");
  cmd->add_option("--min-seconds", o->dispatch.min_seconds, "Time spent per measurement (dispatch)")
      ->capture_default_str();
  cmd->callback([o] {
    Config cfg = load_config(o->config.sources());
    o->generate.rounds = o->train.rounds;
    o->dispatch.rounds = o->train.rounds;
    o->generate.src_len = o->train.src_len;
    auto rep = o->what == "train"      ? bench::bench_train(cfg, o->train, std::cerr)
               : o->what == "generate" ? bench::bench_generate(cfg, o->generate, std::cerr)
                                       : bench::bench_dispatch(cfg, o->dispatch, std::cerr);
    std::cout << bench::format_bench_table(rep);
    if (!o->out.empty()) io::write_file_atomic(o->out, rep.dump(2) + "\n");
  });
}

}  // namespace tlmoe::app
