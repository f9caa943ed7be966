// `tlmoe bench train`: training throughput of the vanilla model, the dense MoE (every expert
// runs, the paper's path) and the sparse top-1 MoE (only the routed expert runs), measured in
// one run on the same synthetic batches and reported as ratios to vanilla.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "config/config.h"

namespace tlmoe::bench {

struct BenchTrainOptions {
  int64_t warmup_steps = 3;
  int64_t steps = 20;         // timed optimizer steps per variant and round
  int64_t rounds = 3;         // variants are interleaved round by round; the best round counts
  int64_t src_len = 64;       // synthetic batch shape (tokens drawn uniformly from the vocabulary)
  int64_t tgt_len = 16;
  int64_t num_tasks = 32;
  double peak_tflops = 0;     // the device's peak (dense bf16 on GPU) for model FLOP utilisation; 0: not reported
  bool skip_dense = false;    // leave the dense MoE out (it costs m times the compute: slow at large sizes on CPU)
};

// Returns {"machine":..., "config":..., "variants": [{"name", "tokens_per_s", "ratio_to_vanilla", "params"}]}
nlohmann::json bench_train(const Config& cfg, const BenchTrainOptions& o, std::ostream& log);

// `tlmoe bench generate`: generation throughput (examples/s) of the vanilla model, the TL-MoE with
// soft routes (dense: every expert runs and keeps a cache) and with hard top-1 routes (sparse: only
// the routed expert runs), on the same synthetic single-task batches, decoded with the eval
// section's beams to exactly max_len tokens (EOS is disabled so every variant does the same work).
struct BenchGenerateOptions {
  int64_t batches = 4;        // timed batches per variant and round (batch size: eval.batch_size)
  int64_t rounds = 3;         // interleaved; the best round counts
  int64_t src_len = 64;
  int64_t num_tasks = 32;
};

// Returns {"what", "batch", "model", "threads", "variants": [{"name", "examples_per_s", "ratio_to_vanilla", "params"}]}
nlohmann::json bench_generate(const Config& cfg, const BenchGenerateOptions& o, std::ostream& log);

// `tlmoe bench dispatch`: bandwidth (GB/s = (bytes read + bytes written) / s) of the dispatch
// ops next to a plain device copy of the same bytes (the ceiling) and LibTorch's naive path
// (index_select for gather; ys * w then index_add_ for the weighted combine), over shapes from
// small to the paper's (B=32, S=512, D=768, m=3), on the config's device (fp32; also bf16 on CUDA).
struct BenchDispatchOptions {
  double min_seconds = 0.25;  // each measurement repeats the op for at least this long
  int64_t rounds = 3;         // interleaved; the best counts
  std::string shapes;         // "B,S,D,m,K;..." replaces the default list when set
};

nlohmann::json bench_dispatch(const Config& cfg, const BenchDispatchOptions& o, std::ostream& log);

// The variants of a bench_train, bench_generate or bench_dispatch report as an aligned table.
std::string format_bench_table(const nlohmann::json& report);

}  // namespace tlmoe::bench
