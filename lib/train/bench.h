// `tlmoe bench train`: training throughput of the vanilla model, the dense MoE (every expert
// runs, the paper's path) and the sparse top-1 MoE (only the routed expert runs), measured in
// one run on the same synthetic batches and reported as ratios to vanilla.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "config/config.h"

namespace tlmoe::train {

struct BenchTrainOptions {
  int64_t warmup_steps = 3;
  int64_t steps = 20;         // timed optimizer steps per variant and round
  int64_t rounds = 3;         // variants are interleaved round by round; the best round counts
  int64_t src_len = 64;       // synthetic batch shape (tokens drawn uniformly from the vocabulary)
  int64_t tgt_len = 16;
  int64_t num_tasks = 32;
};

// Returns {"machine":..., "config":..., "variants": [{"name", "tokens_per_s", "ratio_to_vanilla", "params"}]}
nlohmann::json bench_train(const Config& cfg, const BenchTrainOptions& o, std::ostream& log);

std::string format_bench_table(const nlohmann::json& report);

}  // namespace tlmoe::train
