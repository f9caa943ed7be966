#include "train/task_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "data/preprocess.h"
#include "data/task_rep.h"
#include "data/token_cache.h"
#include "model/hf_bart.h"
#include "train/checkpoint.h"
#include "train/task_rep_compute.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::train {

namespace {

json read_manifest(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw DataError(p.string(), 0, "cannot read the preprocess manifest; run `tlmoe preprocess`");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw DataError(p.string(), 0, std::string("damaged manifest: ") + e.what());
  }
}

void append(std::vector<Example>& out, const fs::path& file, int64_t task_id) {
  data::TokenCache c = data::read_token_cache(file);
  out.reserve(out.size() + c.examples.size());
  for (auto& e : c.examples) {
    Example x;
    x.task_id = task_id;
    x.input = std::move(e.input_ids);
    x.outputs = std::move(e.output_ids);
    out.push_back(std::move(x));
  }
}

}  // namespace

json read_preprocess_manifest(const Config& cfg) { return read_manifest(fs::path(cache_dir(cfg)) / "manifest.json"); }

TaskData load_task_data(const Config& cfg, std::ostream& log) {
  std::ostringstream quiet;  // the full table is `tlmoe preprocess`'s job; keep the summary line
  const data::PreprocessReport rep = data::preprocess(cfg, quiet);
  log << "data: " << rep.tasks.size() << " tasks, token caches " << rep.files_built << " built, "
      << rep.files_reused << " reused (" << rep.cache_dir.string() << ")\n";

  compute_task_reps(cfg, log);  // textemb / fisher: computed or reused; nothing for "learned"

  const fs::path mpath = rep.cache_dir / "manifest.json";
  const json man = read_manifest(mpath);
  TaskData d;
  const json& tok = man.at("tokenizer");
  d.vocab_size = tok.at("vocab_size").get<int64_t>();
  d.pad_id = tok.at("pad_id").get<int64_t>();
  d.bos_id = tok.at("bos_id").get<int64_t>();
  d.eos_id = tok.at("eos_id").get<int64_t>();
  d.tokenizer_fingerprint = tok.at("fingerprint").get<std::string>();
  d.tokenizer_model = tok.at("path").get<std::string>();

  const json& tasks = man.at("tasks");
  for (auto it = tasks.begin(); it != tasks.end(); ++it) d.task_names.push_back(it.key());
  std::sort(d.task_names.begin(), d.task_names.end());
  std::map<std::string, int64_t> id;
  for (size_t i = 0; i < d.task_names.size(); ++i) id[d.task_names[i]] = static_cast<int64_t>(i);

  const std::string& src = cfg.data.upstream_source;
  for (const auto& name : d.task_names) {
    const json& t = tasks.at(name);
    if (t.value("partition", "") != "train") continue;
    d.upstream.push_back(name);
    bool any_train = false;
    for (const json& f : t.at("files")) {
      const std::string kind = f.at("kind"), split = f.at("split");
      const fs::path file = rep.cache_dir / f.at("cache").get<std::string>();
      const bool is_full = kind == "full";
      bool to_train = false, to_dev = false;
      if (src == "full") {
        to_train = is_full && split == "train";
        to_dev = is_full && split == "dev";
      } else {
        to_train = !is_full && (split == "train" || (src == "kshot_train_dev" && split == "dev"));
        to_dev = !is_full && split == "dev";
      }
      if (to_train) append(d.train, file, id[name]), any_train = true;
      if (to_dev) append(d.dev, file, id[name]);
    }
    if (!any_train)
      throw DataError(mpath.string(), 0,
                      "upstream task '" + name + "' has no " +
                          (src == "full" ? std::string("{task}_full_train.tsv file")
                                         : std::string("k-shot train files")) +
                          " (data.upstream_source = " + src + ")");
  }
  if (d.upstream.empty())
    throw DataError(man.value("splits", std::string("splits")), 0, "the split file lists no \"train\" tasks to train on");
  log << "data: " << d.upstream.size() << " upstream tasks, " << d.train.size() << " train and " << d.dev.size()
      << " dev examples (" << src << ")\n";
  return d;
}

void initialise_model(model::TLMoEModelImpl& m, const Config& cfg, const TaskData& data) {
  torch::NoGradGuard g;
  // ---- backbone ------------------------------------------------------------------------------
  const std::string& from = cfg.model.init_from;
  if (const std::string hf_dir = model::hf_dir_of(from); !hf_dir.empty()) {
    // A Hugging Face BART directory (SPEC §1.9): embeddings, position tables and vanilla layers
    // copied, every expert = the BART layer + N(0, init_noise) noise.
    auto hf = model::load_hf_bart(hf_dir);
    if (data.tokenizer_fingerprint.rfind("bart-bpe:", 0) != 0)
      throw ConfigError("", "tokenizer.kind",
                        "model.init_from = " + from + " is a Hugging Face BART: its token ids need tokenizer.kind: "
                        "bart-bpe (the model's vocab.json + merges.txt), not " + cfg.tokenizer.kind);
    model::check_hf_architecture(hf, m.options());
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cfg.train.seed));
    try {
      m.init_from_dense(hf.state, cfg.model.init_noise, &gen);
    } catch (const InputError& e) {
      throw DataError((fs::path(hf_dir) / "model.safetensors").string(), 0,
                      std::string("checkpoint does not fit the config: ") + e.what());
    }
  } else if (!from.empty()) {
    auto ck = load_checkpoint(from, /*with_optimizer=*/false);
    const std::string src = (fs::path(from) / "model.safetensors").string();
    if (ck.meta.value("tokenizer_fingerprint", "") != data.tokenizer_fingerprint)
      throw DataError((fs::path(from) / "meta.json").string(), 0,
                      "model.init_from was trained with another tokenizer (fingerprint differs)");
    // the backbone only: routing state comes from routing.init_from or stays fresh
    std::map<std::string, torch::Tensor> backbone;
    for (auto& [k, v] : ck.model)
      if (k.rfind("model.", 0) == 0 || k == "final_logits_bias") backbone[k] = v;
    const bool dense_src = backbone.count("model.encoder.layers.0.self_attn.q_proj.weight") > 0;
    if (dense_src && m.options().experts > 1) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cfg.train.seed));
      try {
        m.init_from_dense(backbone, cfg.model.init_noise, &gen);
      } catch (const InputError& e) {
        throw DataError(src, 0, std::string("checkpoint does not fit the config: ") + e.what());
      }
    } else {
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
        if (!missing.empty()) msg += " missing " + missing.front() + (missing.size() > 1 ? " (+" + std::to_string(missing.size() - 1) + " more)" : "") + ";";
        if (!extra.empty()) msg += " unexpected " + extra.front() + (extra.size() > 1 ? " (+" + std::to_string(extra.size() - 1) + " more)" : "") + ";";
        if (!shape.empty()) msg += " shape differs for " + shape.front() + (shape.size() > 1 ? " (+" + std::to_string(shape.size() - 1) + " more)" : "") + ";";
        throw DataError(src, 0, msg);
      }
      for (auto& [k, v] : mine) v.copy_(backbone.at(k));
    }
  }

  // ---- task table --------------------------------------------------------------------------------
  if (m.task_table && cfg.task_rep.kind != "learned") {
    const fs::path p = data::task_rep_path(cfg);
    auto rep = data::load_task_rep(p);
    if (rep.kind != cfg.task_rep.kind)
      throw DataError(p.string(), 0, "holds '" + rep.kind + "' representations but task_rep.kind is " + cfg.task_rep.kind);
    m.task_table->weight.copy_(data::task_rep_rows(rep, p, data.task_names, cfg.task_rep.dim));
  }

  // ---- router and task table from a stage-1 run (SPEC §3.5) -----------------------------------------
  if (!cfg.routing.init_from.empty()) {
    if (!m.has_router())
      throw ConfigError("", "routing.init_from", "the model has no learned router (routing.baseline = " +
                                                     cfg.routing.baseline + ", model.experts = " +
                                                     std::to_string(m.options().experts) + ")");
    auto ck = load_checkpoint(cfg.routing.init_from, /*with_optimizer=*/false);
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
  if (cfg.routing.freeze) {
    if (!m.has_router()) throw ConfigError("", "routing.freeze", "the model has no learned router to freeze");
    for (auto& p : m.named_parameters(true))
      if (p.key().rfind("router.", 0) == 0) p.value().set_requires_grad(false);
  }
}

}  // namespace tlmoe::train
