#include "io/checkpoint.h"

#include <sstream>

#include "common/error.h"
#include "common/version.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace tlmoe::io {

void save_checkpoint(const fs::path& dir, const CheckpointData& data) {
  io::StagingDir staging(dir);
  nlohmann::json meta = data.meta;
  meta["format"] = "tlmoe-checkpoint";
  meta["format_version"] = kCheckpointVersion;
  meta["tlmoe_version"] = tlmoe_version();
  meta["git_sha"] = git_sha();
  io::save_safetensors(staging.path() / "model.safetensors", data.model, {{"format", "pt"}});
  if (!data.optimizer.empty()) io::save_safetensors(staging.path() / "optimizer.safetensors", data.optimizer);
  io::write_file_atomic(staging.path() / "meta.json", meta.dump(1) + "\n");
  staging.commit();
}

LoadedCheckpoint load_checkpoint(const fs::path& dir, bool with_optimizer) {
  if (!fs::is_directory(dir)) throw DataError(dir.string(), 0, "checkpoint directory not found");
  LoadedCheckpoint out;
  const fs::path meta_path = dir / "meta.json";
  if (!fs::exists(meta_path)) throw DataError(meta_path.string(), 0, "missing: not a tlmoe checkpoint directory");
  try {
    out.meta = nlohmann::json::parse(io::read_file(meta_path));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(meta_path.string(), 0, std::string("invalid JSON: ") + e.what());
  }
  if (out.meta.value("format", "") != "tlmoe-checkpoint")
    throw DataError(meta_path.string(), 0, "not a tlmoe checkpoint (format field missing)");
  int version = out.meta.value("format_version", 0);
  if (version != kCheckpointVersion)
    throw DataError(meta_path.string(), 0,
                    "checkpoint format version " + std::to_string(version) + " is not supported (this tlmoe reads " +
                        std::to_string(kCheckpointVersion) + "); retrain with `tlmoe train`");
  auto model = io::load_safetensors(dir / "model.safetensors");
  out.model = std::move(model.tensors);
  if (with_optimizer && fs::exists(dir / "optimizer.safetensors"))
    out.optimizer = io::load_safetensors(dir / "optimizer.safetensors").tensors;
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> module_state(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> v;
  for (const auto& p : module.named_parameters(true)) v.emplace_back(p.key(), p.value().detach());
  for (const auto& b : module.named_buffers(true)) v.emplace_back(b.key(), b.value());
  return v;
}

void load_into(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& state,
               const std::string& source) {
  std::map<std::string, torch::Tensor> targets;
  for (auto& p : module.named_parameters(true)) targets[p.key()] = p.value();
  for (auto& b : module.named_buffers(true)) targets[b.key()] = b.value();
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, t] : targets) {
    auto it = state.find(name);
    if (it == state.end()) missing.push_back(name);
    else if (it->second.sizes() != t.sizes()) {
      std::ostringstream s;
      s << name << " is " << it->second.sizes() << " in the checkpoint but " << t.sizes() << " in the model";
      mismatched.push_back(s.str());
    }
  }
  for (const auto& [name, t] : state)
    if (!targets.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::ostringstream msg;
    msg << "checkpoint does not fit the config:";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      msg << " " << v.size() << " " << what << " (";
      for (size_t i = 0; i < std::min<size_t>(v.size(), 3); ++i) msg << (i ? "; " : "") << v[i];
      if (v.size() > 3) msg << "; ...";
      msg << ")";
    };
    list("tensors missing from the checkpoint", missing);
    list("tensors the model does not have", unexpected);
    list("shape mismatches", mismatched);
    throw DataError(source, 0, msg.str());
  }
  torch::NoGradGuard g;
  for (auto& [name, t] : targets) t.copy_(state.at(name).to(t.device(), t.scalar_type()));
}

}  // namespace tlmoe::io
