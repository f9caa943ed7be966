// Task-representation files (docs/method.md §5): one vector per task, computed by `tlmoe preprocess`
// (task_rep.kind = textemb | fisher) and loaded by train, adapt and eval.
//
// Format: a safetensors file with one F32 tensor "matrix" [n_tasks, dim] and metadata
//   format = "tlmoe-taskrep", version = "1", kind = textemb | fisher,
//   tasks = JSON list of task names (row order), info = JSON object (how it was computed:
//   source checkpoint, tokenizer fingerprint, PCA explained variance, ...); optionally more
//   tensors (TaskRepFile::extra).
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/config.h"

namespace tlmoe::data {

inline constexpr int kTaskRepVersion = 1;

struct TaskRepFile {
  std::string kind;
  std::vector<std::string> tasks;
  torch::Tensor matrix;  // [n, dim] float32, CPU
  nlohmann::json info = nlohmann::json::object();
  // Further tensors kept with the file (e.g. "raw" vectors before projection, "pca.mean",
  // "pca.components"), so unseen tasks can be projected with the same fitted PCA.
  std::vector<std::pair<std::string, torch::Tensor>> extra;
};

// Written atomically.
void save_task_rep(const std::filesystem::path& path, const TaskRepFile& rep);
// Throws DataError naming the file for a missing, damaged or foreign file.
TaskRepFile load_task_rep(const std::filesystem::path& path);

// task_rep.path, or {cache_dir}/taskrep/{kind}.safetensors.
std::filesystem::path task_rep_path(const Config& cfg);

// The rows of `tasks` (in that order) from the file; a task missing from the file is a
// DataError naming the file and the task, a dimension other than `dim` too.
torch::Tensor task_rep_rows(const TaskRepFile& rep, const std::filesystem::path& source,
                            const std::vector<std::string>& tasks, int64_t dim);

}  // namespace tlmoe::data
