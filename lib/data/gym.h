// The embedded benchmark ("the gym"): a synthetic multi-task suite of text-to-text tasks in
// the CrossFit / NLP Few-shot Gym layout, generated deterministically from a seed.
//
// generate() writes, under opts.out (built in a staging directory and moved into place):
//   gym.json        marker: generator, format_version, seed, num_tasks
//   splits.json     task partition (CrossFit random.json format: all / train / dev / test)
//   tasks.json      per task: category, sub_category, metric, labels, instruction
//   ontology.json   top category -> sub-category -> tasks
//   T/T_{k}_{s}_{train|dev|test}.tsv   for every task T and s in 13, 21, 42, 87, 100
//   T/T_full_{train|dev}.tsv           for every task of the "train" partition
// The same seed gives byte-identical files. See docs/gym.md for the task families.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace tlmoe::gym {

struct GymOptions {
  std::filesystem::path out;
  std::uint64_t seed = 42;
};

struct GymTaskInfo {
  std::string name, category, sub_category, metric;
  std::string partition;  // "train" | "dev" | "test"
  bool classification = false;
  std::vector<std::string> labels;  // label words for classification tasks, else empty
  std::size_t n_full_train = 0, n_full_dev = 0, n_test = 0,
              k = 0;  // k = shots (per class for classification)
};

struct GymSummary {
  std::vector<GymTaskInfo> tasks;  // sorted by name
};

// The few-shot split seeds of the CrossFit protocol, in the order CrossFit lists them.
const std::vector<int>& kshot_seeds();

// Writes the whole gym under opts.out; throws tlmoe::UsageError when opts.out exists, is not
// empty and holds no gym.json (an unrelated directory is never replaced), and
// std::runtime_error on I/O failure (nothing half-written is left behind).
GymSummary generate(const GymOptions& opts);

// A plain-text aligned table, one row per task: name, category, partition, metric, k,
// #train (full-train examples; "-" for dev/test tasks), #test.
std::string format_task_table(const GymSummary& summary);

}  // namespace tlmoe::gym
