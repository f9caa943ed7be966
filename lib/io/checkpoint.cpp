#include "io/checkpoint.h"

#include <sstream>

#include "common/error.h"
#include "common/version.h"
#include "io/atomic_file.h"
#include "io/json_text.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace tlmoe::io {

namespace {

using nlohmann::json;

std::string found(const json& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + text;
}

// Every field tlmoe reads from meta.json has the type it is read as (the layout: io/checkpoint.h).
void check_meta_types(const json& meta, const std::string& file) {
  if (!meta.is_object()) throw DataError(file, 0, "expected a JSON object, found " + found(meta));
  auto fail = [&](const std::string& key, const char* want, const json& v) {
    throw DataError(file, 0, "\"" + key + "\" must be " + want + ", found " + found(v));
  };
  auto natural = [&](const json& obj, const std::string& prefix, const char* k, bool required) {
    if (!obj.contains(k)) {
      if (required) throw DataError(file, 0, "\"" + prefix + k + "\" is missing");
      return;
    }
    const json& v = obj.at(k);
    if (!v.is_number_integer() || (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() < 0))
      fail(prefix + k, "a non-negative integer", v);
  };
  for (const char* k : {"format", "tlmoe_version", "git_sha", "tokenizer_fingerprint", "tokenizer_model", "config"})
    if (meta.contains(k) && !meta[k].is_string()) fail(k, "a string", meta[k]);
  natural(meta, "", "format_version", false);
  natural(meta, "", "step", false);
  if (meta.contains("tasks")) {
    const json& t = meta["tasks"];
    if (!t.is_array()) fail("tasks", "a list of task names", t);
    for (const json& name : t)
      if (!name.is_string()) fail("tasks", "a list of task names (strings)", name);
  }
  for (const char* k : {"health", "hf_source"})
    if (meta.contains(k) && !meta[k].is_object()) fail(k, "an object", meta[k]);
  if (!meta.contains("trainer")) return;
  const json& t = meta["trainer"];
  if (!t.is_object()) fail("trainer", "an object", t);
  for (const char* k : {"step", "epoch", "position"}) natural(t, "trainer.", k, true);
  for (const char* k : {"best_step", "world_size"}) natural(t, "trainer.", k, false);
  for (const char* k : {"best_dev_loss", "best_dev_score"})
    if (t.contains(k) && !t[k].is_number() && !t[k].is_null()) fail(std::string("trainer.") + k, "a number or null", t[k]);
}

}  // namespace

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
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw DataError(dir.string(), 0, ec && ec != std::errc::no_such_file_or_directory ? "cannot read the checkpoint: " + ec.message()
                                                                                       : "checkpoint directory not found");
  LoadedCheckpoint out;
  const fs::path meta_path = dir / "meta.json";
  if (!fs::exists(meta_path, ec)) throw DataError(meta_path.string(), 0, "missing: not a tlmoe checkpoint directory");
  const std::string text = io::read_file(meta_path);
  try {
    out.meta = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // syntax, or a number too large (out_of_range.406)
    throw DataError(meta_path.string(), 0, "invalid JSON: " + io::json_error_text(e));
  }
  io::refuse_duplicate_keys(text, meta_path.string());
  check_meta_types(out.meta, meta_path.string());
  if (out.meta.value("format", "") != "tlmoe-checkpoint")
    throw DataError(meta_path.string(), 0, "not a tlmoe checkpoint (format field missing)");
  int version = out.meta.value("format_version", 0);
  if (version != kCheckpointVersion)
    throw DataError(meta_path.string(), 0,
                    "checkpoint format version " + std::to_string(version) + " is not supported (this tlmoe reads " +
                        std::to_string(kCheckpointVersion) + "); retrain with `tlmoe train`");
  auto model = io::load_safetensors(dir / "model.safetensors");
  out.model = std::move(model.tensors);
  if (with_optimizer && fs::exists(dir / "optimizer.safetensors", ec))
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
    } else if (it->second.scalar_type() != t.scalar_type() &&
               !(at::isFloatingType(it->second.scalar_type()) && at::isFloatingType(t.scalar_type()))) {
      // floating types convert (a bf16 export into an fp32 model); integers or booleans never stand in for them
      std::ostringstream s;
      s << name << " is " << it->second.scalar_type() << " in the checkpoint but " << t.scalar_type() << " in the model";
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
    list("shape or type mismatches", mismatched);
    throw DataError(source, 0, msg.str());
  }
  torch::NoGradGuard g;
  for (auto& [name, t] : targets) t.copy_(state.at(name).to(t.device(), t.scalar_type()));
}

}  // namespace tlmoe::io
