#include "train/model_init.h"

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/task_rep.h"
#include "io/checkpoint.h"
#include "model/hf_bart.h"
#include "model/hf_defaults.h"

namespace fs = std::filesystem;

namespace tlmoe::train {

namespace {

// The first of `names` and how many more, for a message.
std::string first_of(const std::vector<std::string>& names) {
  return names.front() + (names.size() > 1 ? " (+" + std::to_string(names.size() - 1) + " more)" : "");
}

// A Hugging Face BART directory (docs/method.md §1.6): embeddings, position tables and vanilla
// layers copied, every expert = the BART layer + N(0, init_noise) noise.
void init_from_hf(model::TLMoEModelImpl& m, const Config& cfg, const UpstreamData& data, const std::string& hf_dir) {
  auto hf = model::load_hf_bart(hf_dir);
  if (data.tokenizer_fingerprint.rfind("bart-bpe:", 0) != 0)
    throw ConfigError("", "tokenizer.kind",
                      "model.init_from = " + cfg.model.init_from + " is a Hugging Face BART: its token ids need tokenizer.kind: "
                      "bart-bpe (the model's tokenizer.json or vocab.json + merges.txt), not " + cfg.tokenizer.kind);
  model::check_hf_architecture(hf, m.options());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cfg.train.seed));
  try {
    m.init_from_dense(hf.state, cfg.model.init_noise, &gen);
  } catch (const InputError& e) {
    throw DataError((fs::path(hf_dir) / "model.safetensors").string(), 0,
                    std::string("checkpoint does not fit the config: ") + e.what());
  }
}

// A backbone of exactly this model's shape: every model.* tensor copied, after checking that the
// names and shapes match.
void copy_same_shape(model::TLMoEModelImpl& m, const std::map<std::string, torch::Tensor>& backbone,
                     const std::string& src) {
  std::map<std::string, torch::Tensor> mine;
  for (auto& p : m.named_parameters(true))
    if (p.key().rfind("model.", 0) == 0) mine[p.key()] = p.value();
  for (auto& b : m.named_buffers(true))
    if (b.key().rfind("model.", 0) == 0 || b.key() == "final_logits_bias") mine[b.key()] = b.value();
  std::vector<std::string> missing, extra, shape;
  for (auto& [k, v] : mine) {
    auto it = backbone.find(k);
    if (it == backbone.end()) missing.push_back(k);
    else if (it->second.sizes() != v.sizes()) shape.push_back(k);
  }
  for (auto& [k, v] : backbone)
    if (!mine.count(k)) extra.push_back(k);
  if (!missing.empty() || !extra.empty() || !shape.empty()) {
    std::string msg = "checkpoint does not fit the config:";
    if (!missing.empty()) msg += " missing " + first_of(missing) + ";";
    if (!extra.empty()) msg += " unexpected " + first_of(extra) + ";";
    if (!shape.empty()) msg += " shape differs for " + first_of(shape) + ";";
    throw DataError(src, 0, msg);
  }
  for (auto& [k, v] : mine) v.copy_(backbone.at(k));
}

// A tlmoe checkpoint's backbone (routing state comes from routing.init_from or stays fresh): a
// dense checkpoint into a routed model gives every expert a noisy copy of its layer.
void init_from_checkpoint(model::TLMoEModelImpl& m, const Config& cfg, const UpstreamData& data, const std::string& from) {
  auto ck = io::load_checkpoint(from, /*with_optimizer=*/false);
  const std::string src = (fs::path(from) / "model.safetensors").string();
  if (ck.meta.value("tokenizer_fingerprint", "") != data.tokenizer_fingerprint)
    throw DataError((fs::path(from) / "meta.json").string(), 0,
                    "model.init_from was trained with another tokenizer (fingerprint differs)");
  std::map<std::string, torch::Tensor> backbone;
  for (auto& [k, v] : ck.model)
    if (k.rfind("model.", 0) == 0 || k == "final_logits_bias") backbone[k] = v;
  const bool dense_src = backbone.count("model.encoder.layers.0.self_attn.q_proj.weight") > 0;
  if (!(dense_src && m.options().experts > 1)) return copy_same_shape(m, backbone, src);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cfg.train.seed));
  try {
    m.init_from_dense(backbone, cfg.model.init_noise, &gen);
  } catch (const InputError& e) {
    throw DataError(src, 0, std::string("checkpoint does not fit the config: ") + e.what());
  }
}

// The router and task table of a stage-1 run (docs/method.md §7).
void init_routing_from(model::TLMoEModelImpl& m, const Config& cfg, const UpstreamData& data) {
  if (!m.has_router())
    throw ConfigError("", "routing.init_from", "the model has no learned router (routing.baseline = " +
                                                   cfg.routing.baseline + ", model.experts = " +
                                                   std::to_string(m.options().experts) + ")");
  auto ck = io::load_checkpoint(cfg.routing.init_from, /*with_optimizer=*/false);
  const std::string src = (fs::path(cfg.routing.init_from) / "model.safetensors").string();
  for (auto& p : m.named_parameters(true)) {
    if (p.key().rfind("router.", 0) != 0) continue;
    auto it = ck.model.find(p.key());
    if (it == ck.model.end()) throw DataError(src, 0, "no tensor " + p.key() + " (another router kind?)");
    if (it->second.sizes() != p.value().sizes())
      throw DataError(src, 0, "shape of " + p.key() + " differs from the config's router");
    p.value().copy_(it->second);
  }
  auto tt = ck.model.find("task_table.weight");
  if (tt == ck.model.end()) throw DataError(src, 0, "no task_table.weight");
  const auto names = ck.meta.value("tasks", std::vector<std::string>{});
  data::TaskRepFile rep;
  rep.tasks = names;
  rep.matrix = tt->second;
  if (static_cast<size_t>(tt->second.size(0)) != names.size())
    throw DataError(src, 0, "task_table.weight rows do not match the checkpoint's task list");
  m.task_table->weight.copy_(data::task_rep_rows(rep, src, data.task_names, cfg.task_rep.dim));
}

}  // namespace

void initialise_model(model::TLMoEModelImpl& m, const Config& cfg, const UpstreamData& data) {
  torch::NoGradGuard g;
  const std::string& from = cfg.model.init_from;
  if (const std::string hf_dir = model::hf_dir_of(from); !hf_dir.empty()) init_from_hf(m, cfg, data, hf_dir);
  else if (!from.empty()) init_from_checkpoint(m, cfg, data, from);

  if (m.task_table && cfg.task_rep.kind != "learned") {  // textemb / fisher rows
    const fs::path p = data::task_rep_path(cfg);
    auto rep = data::load_task_rep(p);
    if (rep.kind != cfg.task_rep.kind)
      throw DataError(p.string(), 0, "holds '" + rep.kind + "' representations but task_rep.kind is " + cfg.task_rep.kind);
    m.task_table->weight.copy_(data::task_rep_rows(rep, p, data.task_names, cfg.task_rep.dim));
  }
  if (!cfg.routing.init_from.empty()) init_routing_from(m, cfg, data);
  if (cfg.routing.freeze) {
    if (!m.has_router()) throw ConfigError("", "routing.freeze", "the model has no learned router to freeze");
    for (auto& p : m.named_parameters(true))
      if (p.key().rfind("router.", 0) == 0) p.value().set_requires_grad(false);
  }
}

nlohmann::json adopt_start_model(Config& cfg, std::ostream& log) {
  nlohmann::json source;
  const std::string& from = cfg.model.init_from;
  if (const std::string dir = model::hf_dir_of(from); !dir.empty()) {
    const model::HfBart hf = model::read_hf_bart_config(dir);
    model::adopt_hf_architecture(cfg, hf, log);
    source = model::hf_source_of(hf);
    log << "model: the architecture of " << (hf.dir / "config.json").string() << " (keys not set in the config)\n";
  } else if (!from.empty()) {
    source = model::checkpoint_hf_source(from);
  }
  if (!source.is_null() && !model::adopt_hf_generation(cfg, source).empty())
    log << "decoding: the settings of " << (fs::path(source.value("dir", std::string())) / "generation_config.json").string()
        << " (keys not set in the config): " << model::describe_generation(cfg) << "\n";
  validate(cfg);
  return source;
}

}  // namespace tlmoe::train
