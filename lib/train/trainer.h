// Upstream multi-task training (docs/method.md §6): the loop, evaluation, checkpoints, resume, logging.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "train/dist.h"

namespace tlmoe::train {

struct TrainOptions {
  Config cfg;
  std::string run_dir;      // checkpoints (best/, last/, step_N/), metrics.jsonl, routes/
  bool resume = false;      // continue from run_dir/last exactly
  int64_t stop_after = 0;   // > 0: stop (with a checkpoint) after this many steps of this invocation
  std::ostream* log = nullptr;
  bool plain_progress = false;
  // The launch contract (dist::read_launch_env). world_size > 1: data-parallel training over
  // that many processes; rank 0 writes the run directory, every rank reads it on resume.
  dist::LaunchEnv launch;
};

struct TrainResult {
  int64_t step = 0;                  // optimizer steps done
  std::vector<double> step_losses;   // per-token train loss of each step of this invocation (whole global batch)
  double best_dev_loss = 0;          // lowest teacher-forced dev loss per token
  double best_dev_score = 0;         // highest generation dev score (train.select_by = score; else -inf)
  int64_t best_step = 0;
  bool stopped_early = false;        // stop_after reached before train.steps
  nlohmann::json health;             // metrics::assess_health of the dev evaluations ({run}/health.json)
};

// Trains per cfg. Throws InputError for bad data/config/checkpoints, std::runtime_error for
// failures (a non-finite loss stops training; the last good checkpoint is kept).
TrainResult train(const TrainOptions& opts);

}  // namespace tlmoe::train
