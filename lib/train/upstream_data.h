// What upstream training reads: the preprocessed token caches of the upstream ("train")
// tasks, in the form the batcher takes, and the task list that orders the task table.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/batching.h"

namespace tlmoe::train {

struct UpstreamData {
  std::vector<std::string> task_names;  // every task of splits "all", sorted: row i of the task table
  std::vector<std::string> upstream;    // the "train" tasks, sorted
  std::vector<data::Example> train, dev;      // upstream examples (task_id indexes task_names)
  int64_t vocab_size = 0, pad_id = 1, bos_id = 0, eos_id = 2;
  std::string tokenizer_fingerprint, tokenizer_model;
  // data.upstream_source = full, tasks without {task}_full_dev.tsv: the examples at the end of their
  // {task}_full_train.tsv held out as dev examples (not trained on): from index `first`, `count` of them.
  struct HeldOut {
    int64_t first = 0, count = 0;
  };
  std::map<std::string, HeldOut> held_out;
};

// The examples held out of an n-example {task}_full_train.tsv when the task has no full dev file:
// the last 10% (at least 1, at most 500); 0 when n < 2.
int64_t held_out_size(int64_t n);

// Brings the caches up to date (`tlmoe preprocess`, incremental: no work when nothing changed)
// and loads the upstream examples per data.upstream_source:
//   kshot           every k-shot train file of the upstream tasks; dev = their k-shot dev files
//   kshot_train_dev k-shot train and dev files; dev = the k-shot dev files (CrossFit's baseline)
//   full            {task}_full_train.tsv; dev = {task}_full_dev.tsv, or for a task without one the
//                   last held_out_size(n) examples of its full train file (said in the log)
UpstreamData load_upstream_data(const Config& cfg, std::ostream& log);

}  // namespace tlmoe::train
