#include "data/layout.h"

#include <algorithm>
#include <system_error>

#include "common/error.h"
#include "data/tsv.h"

namespace fs = std::filesystem;

namespace tlmoe::data {

namespace {

const char* kLayoutHint =
    "expected files {task}_{k}_{seed}_{train|dev|test}.tsv or {task}_full_{train|dev}.tsv";

void require_task_folder(const fs::path& folder, const std::string& task) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec))
    throw DataError(folder.string(), 0, "no folder for task '" + task + "' (" + kLayoutHint + " in it)");
}

// Data files (*.tsv) directly inside `folder`, sorted by name.
std::vector<fs::path> tsv_files(const fs::path& folder) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.path().extension() == ".tsv" && !entry.is_directory()) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

fs::path& slot_of(KShotSplit& s, const std::string& split) {
  if (split == "train") return s.train;
  if (split == "dev") return s.dev;
  return s.test;
}

}  // namespace

fs::path task_dir(const fs::path& dir, const std::string& task) { return dir / task; }

std::vector<KShotSplit> find_kshot_splits(const fs::path& dir, const std::string& task) {
  const fs::path folder = task_dir(dir, task);
  require_task_folder(folder, task);
  std::map<std::string, KShotSplit> by_prefix;  // sorted by prefix string
  for (const auto& file : tsv_files(folder)) {
    const std::string name = file.filename().string();
    auto parsed = match_file_name(name);
    if (!parsed) throw DataError(file.string(), 0, std::string("unexpected file name; ") + kLayoutHint);
    if (parsed->task != task)
      throw DataError(file.string(), 0,
                      "file of task '" + parsed->task + "' in the folder of task '" + task + "'");
    if (parsed->full) continue;
    KShotSplit& s = by_prefix[parsed->prefix];
    s.prefix = parsed->prefix;
    s.k = parsed->k;
    s.seed = parsed->seed;
    slot_of(s, parsed->split) = file;
  }
  std::vector<KShotSplit> out;
  for (auto& [prefix, s] : by_prefix) {
    for (const char* split : {"train", "dev", "test"}) {
      if (slot_of(s, split).empty())
        throw DataError((folder / (prefix + "_" + split + ".tsv")).string(), 0,
                        "missing " + std::string(split) + " file of the k-shot split '" + prefix + "'");
    }
    out.push_back(std::move(s));
  }
  return out;
}

FullFiles full_files(const fs::path& dir, const std::string& task) {
  const fs::path folder = task_dir(dir, task);
  FullFiles f;
  std::error_code ec;
  const fs::path train = folder / (task + "_full_train.tsv");
  const fs::path dev = folder / (task + "_full_dev.tsv");
  if (fs::is_regular_file(train, ec)) f.train = train;
  if (fs::is_regular_file(dev, ec)) f.dev = dev;
  return f;
}

std::map<std::string, TaskFiles> check_dataset(const fs::path& dir, const TaskSplits& splits) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw DataError(dir.string(), 0, "data directory (data.dir) does not exist");
  std::map<std::string, TaskFiles> found;
  for (const auto& task : splits.all) {
    const fs::path folder = task_dir(dir, task);
    std::error_code ec2;
    if (!fs::is_directory(folder, ec2))
      throw DataError(folder.string(), 0,
                      "task '" + task + "' is listed in " + splits.source + " but has no folder here (" +
                          kLayoutHint + ")");
    TaskFiles files;
    files.kshot = find_kshot_splits(dir, task);
    files.full = full_files(dir, task);
    if (files.kshot.empty() && files.full.empty())
      throw DataError(folder.string(), 0, "no data files for task '" + task + "' (" + kLayoutHint + ")");
    found.emplace(task, std::move(files));
  }
  return found;
}

}  // namespace tlmoe::data
