// Checkpoints: a directory written atomically (built under a temporary name, then renamed).
//
//   model.safetensors      every parameter and buffer of the model, by its module path
//   optimizer.safetensors  AdamW state (per parameter step, exp_avg, exp_avg_sq) and the
//                          generator states needed to resume exactly (omitted for exports)
//   meta.json              {"format": "tlmoe-checkpoint", "format_version", "tlmoe_version",
//                           "git_sha", "step", "tokenizer_fingerprint", "tasks": [...],
//                           "config": <resolved YAML text>, "trainer": {...free-form state}}
// A reader checks the format and version and that the tensors fit the model built from
// the config; it says precisely what differs.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace tlmoe::io {

inline constexpr int kCheckpointVersion = 1;

struct CheckpointData {
  std::vector<std::pair<std::string, torch::Tensor>> model;      // named parameters + buffers
  std::vector<std::pair<std::string, torch::Tensor>> optimizer;  // optional
  nlohmann::json meta;  // step, tokenizer_fingerprint, tasks, config, trainer (format fields are added)
};

// Writes `dir` atomically; an existing checkpoint at `dir` is replaced only once the new one
// is complete.
void save_checkpoint(const std::filesystem::path& dir, const CheckpointData& data);

struct LoadedCheckpoint {
  std::map<std::string, torch::Tensor> model;
  std::map<std::string, torch::Tensor> optimizer;  // empty when the file is absent
  nlohmann::json meta;
};

// Reads a checkpoint directory. Throws DataError naming the file for a missing, truncated or
// incompatible checkpoint (an older format says which command rebuilds it).
LoadedCheckpoint load_checkpoint(const std::filesystem::path& dir, bool with_optimizer = true);

// Copies `state` into the module's parameters and buffers. Every name must exist on both sides
// with the same shape; otherwise throws DataError(`source`, 0, "checkpoint does not fit the
// config: ...") listing the differences (at most a few of each kind).
void load_into(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& state,
               const std::string& source);

// All named parameters and buffers of a module, for save_checkpoint.
std::vector<std::pair<std::string, torch::Tensor>> module_state(const torch::nn::Module& module);

}  // namespace tlmoe::io
