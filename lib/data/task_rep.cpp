#include "data/task_rep.h"

#include <map>

#include "common/error.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::data {

void save_task_rep(const fs::path& path, const TaskRepFile& rep) {
  TORCH_CHECK(rep.matrix.dim() == 2 && static_cast<size_t>(rep.matrix.size(0)) == rep.tasks.size(),
              "task representation matrix must be [n_tasks, dim]");
  std::map<std::string, std::string> meta{{"format", "tlmoe-taskrep"},
                                          {"version", std::to_string(kTaskRepVersion)},
                                          {"kind", rep.kind},
                                          {"tasks", json(rep.tasks).dump()},
                                          {"info", rep.info.dump()}};
  std::vector<std::pair<std::string, torch::Tensor>> tensors{{"matrix", rep.matrix.to(torch::kCPU, torch::kFloat).contiguous()}};
  for (const auto& [name, t] : rep.extra) tensors.emplace_back(name, t.to(torch::kCPU).contiguous());
  io::save_safetensors(path, tensors, meta);
}

TaskRepFile load_task_rep(const fs::path& path) {
  if (!fs::exists(path))
    throw DataError(path.string(), 0, "task-representation file not found; compute it with `tlmoe preprocess`");
  auto f = io::load_safetensors(path);
  auto meta = [&](const std::string& k) {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end()) throw DataError(path.string(), 0, "not a tlmoe task-representation file (no '" + k + "')");
    return it->second;
  };
  if (meta("format") != "tlmoe-taskrep") throw DataError(path.string(), 0, "not a tlmoe task-representation file");
  if (meta("version") != std::to_string(kTaskRepVersion))
    throw DataError(path.string(), 0,
                    "task-representation format version " + meta("version") + " (this tlmoe reads " +
                        std::to_string(kTaskRepVersion) + "); recompute it with `tlmoe preprocess`");
  TaskRepFile rep;
  rep.kind = meta("kind");
  try {
    rep.tasks = json::parse(meta("tasks")).get<std::vector<std::string>>();
    rep.info = json::parse(meta("info"));
  } catch (const json::exception& e) {
    throw DataError(path.string(), 0, std::string("damaged metadata: ") + e.what());
  }
  auto it = f.tensors.find("matrix");
  if (it == f.tensors.end()) throw DataError(path.string(), 0, "no 'matrix' tensor");
  rep.matrix = it->second.to(torch::kFloat);
  for (const auto& n : f.names)
    if (n != "matrix") rep.extra.emplace_back(n, f.tensors.at(n));
  if (rep.matrix.dim() != 2 || static_cast<size_t>(rep.matrix.size(0)) != rep.tasks.size())
    throw DataError(path.string(), 0, "matrix shape does not match the task list");
  return rep;
}

fs::path task_rep_path(const Config& cfg) {
  if (!cfg.task_rep.path.empty()) return cfg.task_rep.path;
  return fs::path(cache_dir(cfg)) / "taskrep" / (cfg.task_rep.kind + ".safetensors");
}

torch::Tensor task_rep_rows(const TaskRepFile& rep, const fs::path& source, const std::vector<std::string>& tasks,
                            int64_t dim) {
  if (rep.matrix.size(1) != dim)
    throw DataError(source.string(), 0,
                    "task representations have dimension " + std::to_string(rep.matrix.size(1)) +
                        " but task_rep.dim is " + std::to_string(dim));
  std::map<std::string, int64_t> row;
  for (size_t i = 0; i < rep.tasks.size(); ++i) row[rep.tasks[i]] = static_cast<int64_t>(i);
  std::vector<int64_t> idx;
  for (const auto& t : tasks) {
    auto it = row.find(t);
    if (it == row.end()) throw DataError(source.string(), 0, "no representation for task '" + t + "'");
    idx.push_back(it->second);
  }
  return rep.matrix.index_select(0, torch::tensor(idx, torch::kLong));
}

}  // namespace tlmoe::data
