// What upstream training reads: the preprocessed token caches of the upstream ("train")
// tasks, in the form the batcher takes, plus the model initialisation from the config
// (model.init_from, routing.init_from, task_rep files, freeze flags).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "model/tlmoe_model.h"
#include "train/batching.h"

namespace tlmoe::train {

struct TaskData {
  std::vector<std::string> task_names;  // every task of splits "all", sorted: row i of the task table
  std::vector<std::string> upstream;    // the "train" tasks, sorted
  std::vector<Example> train, dev;      // upstream examples (task_id indexes task_names)
  int64_t vocab_size = 0, pad_id = 1, bos_id = 0, eos_id = 2;
  std::string tokenizer_fingerprint, tokenizer_model;
};

// Brings the caches up to date (`tlmoe preprocess`, incremental: no work when nothing changed)
// and loads the upstream examples per data.upstream_source:
//   kshot           every k-shot train file of the upstream tasks; dev = their k-shot dev files
//   kshot_train_dev k-shot train and dev files; dev = the k-shot dev files (CrossFit's baseline)
//   full            {task}_full_train.tsv; dev = {task}_full_dev.tsv
TaskData load_task_data(const Config& cfg, std::ostream& log);

// {cache_dir}/manifest.json of `tlmoe preprocess` (DataError when missing or damaged).
nlohmann::json read_preprocess_manifest(const Config& cfg);

// Initial weights per the config, before training:
//   model.init_from     a tlmoe checkpoint directory: loaded as is when it has the same shape;
//                       a dense (m = 1) checkpoint into a routed model: experts = copies + noise
//   routing.init_from   a tlmoe checkpoint: router.* and task_table.weight (rows matched by task name)
//   task_rep.kind       textemb | fisher: the task table is filled from the representation file
//   routing.freeze      the router's parameters get requires_grad = false
void initialise_model(model::TLMoEModelImpl& m, const Config& cfg, const TaskData& data);

}  // namespace tlmoe::train
