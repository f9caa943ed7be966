// Dataset discovery in the CrossFit layout (docs/data.md):
//   {dir}/{task}/{task}_{k}_{seed}_{train|dev|test}.tsv   k-shot splits, one prefix per (k, seed)
//   {dir}/{task}/{task}_full_{train|dev}.tsv              optional whole sets (tlmoe's extension)
// Discovery only looks at names; reading the files is read_tsv's job.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "data/task_meta.h"

namespace tlmoe::data {

// One k-shot split: the three files sharing the prefix "{task}_{k}_{seed}".
struct KShotSplit {
  std::string prefix;
  std::int64_t k = 0;
  std::int64_t seed = 0;
  std::filesystem::path train, dev, test;
};

// The whole-set files of a task; an empty path means the file does not exist.
struct FullFiles {
  std::filesystem::path train, dev;
  bool empty() const { return train.empty() && dev.empty(); }
};

// Everything found for one task.
struct TaskFiles {
  std::vector<KShotSplit> kshot;  // sorted by prefix string, as CrossFit sorts file names
  FullFiles full;
};

// {dir}/{task}
std::filesystem::path task_dir(const std::filesystem::path& dir, const std::string& task);

// The k-shot splits in {dir}/{task}/, sorted by prefix string (so "t_16_100" < "t_16_13").
// Non-.tsv files are ignored. Throws DataError naming the file for a .tsv whose name does not
// parse, one that names another task, and for a prefix missing its train, dev or test file
// (naming the missing file). A missing folder is a DataError naming the expected path.
std::vector<KShotSplit> find_kshot_splits(const std::filesystem::path& dir, const std::string& task);

// {dir}/{task}/{task}_full_{train,dev}.tsv where they exist.
FullFiles full_files(const std::filesystem::path& dir, const std::string& task);

// Checks that every task in splits.all has a folder with at least one data file, and returns
// what was found, by task name. Errors name the task and the expected path.
std::map<std::string, TaskFiles> check_dataset(const std::filesystem::path& dir, const TaskSplits& splits);

}  // namespace tlmoe::data
