// Few-shot adaptation on unseen tasks: the CrossFit protocol (docs/method.md §8.2) with tlmoe's choices
// for routed models (docs/method.md §8.6, §13.16).
//
// For every task x k-shot split x learning rate x batch size (grid order: lr-major, then batch
// size): start from the same initial state, fine-tune adapt.steps steps (AdamW, linear warmup
// adapt.warmup_steps then linear decay to 0, clip train.clip_norm), decode the split's dev file
// every adapt.eval_every steps (and after the last step) and keep the state with the best dev
// score (strictly better; ties keep the earlier), then decode the test file with it. Per split
// the grid point with the best dev score is selected (strict '>', the first in grid order wins
// ties); the task score is the mean over splits of the selected test scores (std: numpy's,
// ddof = 0).
//
// Starting points:
//   an upstream TL-MoE checkpoint  the unseen task's route (adapt.route):
//       learned        the trained router on the task's representation (eval-mode routes at the
//                      checkpoint's temperature), fixed during fine-tuning
//       average        uniform weights 1/E in every layer (dense execution)
//       random         one random expert per layer, seeded by adapt.seed and the task
//       new_embedding  a new task-table row (the mean of the upstream rows) trained with the
//                      model (at train.task_lr); the router stays frozen
//     adapt.mode = fixed fine-tunes the whole MoE with that route (hard routes execute only
//     the routed experts); squeeze first builds a dense model of the routed experts (top-1
//     hard routes only) and fine-tunes it.
//   an upstream vanilla checkpoint (model.experts = 1)  fine-tuned as is
//   no checkpoint  the model of cfg.model, freshly initialised (or model.init_from): the
//                  "direct fine-tuning" baseline
//
// Seeding differs from CrossFit's single continuing stream: every grid point seeds its own
// generator from (adapt.seed, task, split, lr, batch size), so a resumed or distributed sweep
// gives the same numbers as an uninterrupted one.
//
// Output (out_dir):
//   sweep.json        what the sweep is (start, tasks, grid, settings): a rerun with other
//                     settings into the same folder is refused
//   progress.jsonl    one line per finished grid point (resume reads it; a torn last line from
//                     a crash is dropped)
//   results.csv       task,split,seed,lr,bsz,best_step,dev,test,selected
//   summary.json      per task: metric, per-split selected test score, mean, std, route
// results.csv and summary.json are rewritten atomically after every grid point.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/tlmoe_model.h"
#include "train/dist.h"

namespace tlmoe::adapt {

struct AdaptOptions {
  Config cfg;                      // data, adapt, eval, train.{weight_decay, clip_norm, label_smoothing, ...}
  std::string checkpoint;          // upstream checkpoint directory; "" = from scratch (cfg.model)
  std::string out_dir;
  std::vector<std::string> tasks;  // empty: the split file's "test" tasks
  std::ostream* log = nullptr;
  bool plain_progress = false;
  int64_t stop_after_points = 0;   // > 0: stop after this many grid points of this invocation (per process)
  // The launch contract (dist::read_launch_env). world_size > 1: the grid points are handed out
  // to the processes one at a time; rank 0 merges every result and writes the output files.
  train::dist::LaunchEnv launch;
};

struct AdaptRow {
  std::string task, split;  // split = the k-shot prefix, e.g. "sst2_16_42"
  int64_t seed = 0;
  double lr = 0;
  int64_t batch_size = 0;
  int64_t best_step = 0;    // 0: no evaluation beat the initial -inf (all NaN)
  double dev = 0, test = 0;
  bool selected = false;
};

struct AdaptResult {
  std::vector<AdaptRow> rows;     // every finished grid point, in grid order
  nlohmann::json summary;         // the contents of summary.json
  int64_t points_total = 0, points_run = 0, points_reused = 0;
  bool complete = false;
};

// A dense (model.experts = 1) copy of `src` whose layer l is expert expert_of_layer[l] of src
// (layers indexed encoder first, then decoder; vanilla layers are copied as they are): the
// model `adapt.mode = squeeze` fine-tunes (docs/method.md §8.6). mcfg = src's config.
model::TLMoEModel squeeze_to_dense(model::TLMoEModel& src, const std::vector<int64_t>& expert_of_layer,
                                   const Config& mcfg);

// Throws InputError for bad input (unknown task, a task without k-shot files, a checkpoint that
// does not fit, another sweep in out_dir) before any fine-tuning starts.
AdaptResult adapt(const AdaptOptions& opts);

}  // namespace tlmoe::adapt
