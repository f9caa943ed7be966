#include "train/task_rep_compute.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common/error.h"
#include "data/task_rep.h"
#include "data/token_cache.h"
#include "io/atomic_file.h"
#include "model/tlmoe_model.h"
#include "data/batching.h"
#include "io/checkpoint.h"
#include "io/dir_lock.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/task_rep_finetune.h"
#include "train/upstream_data.h"
#include "data/preprocess.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::train {

namespace {

struct TaskFilesForRep {
  std::string task;
  std::vector<fs::path> files;  // token caches used
  std::vector<std::string> hashes;
};

// The checkpoint's own config (meta.json "config", resolved YAML).
Config checkpoint_config(const fs::path& dir, const json& meta) {
  if (!meta.contains("config")) throw DataError((dir / "meta.json").string(), 0, "no \"config\" entry");
  const fs::path tmp = fs::temp_directory_path() / ("tlmoe-ckcfg-" + std::to_string(std::random_device{}()) + ".yaml");
  {
    std::ofstream f(tmp);
    f << meta["config"].get<std::string>();
  }
  try {
    Config c = load_config({tmp.string(), {}});
    fs::remove(tmp);
    return c;
  } catch (const ConfigError& e) {
    fs::remove(tmp);
    throw DataError((dir / "meta.json").string(), 0, std::string("its config does not load: ") + e.what());
  }
}

std::vector<data::Example> load_examples(const std::vector<fs::path>& files, int64_t vocab) {
  std::vector<data::Example> out;
  for (const auto& f : files) {
    auto c = data::read_token_cache(f, vocab);
    for (auto& e : c.examples) out.push_back({0, std::move(e.input_ids), std::move(e.output_ids)});
  }
  return out;
}

// Copies every tensor of `state` the model has; all but the adapters must be present.
void load_backbone(model::TLMoEModelImpl& m, const std::map<std::string, torch::Tensor>& state, const std::string& src) {
  torch::NoGradGuard g;
  auto copy = [&](const std::string& name, torch::Tensor& t) {
    if (name.find(".adapters.") != std::string::npos) return;
    auto it = state.find(name);
    if (it == state.end()) throw DataError(src, 0, "checkpoint has no tensor " + name);
    if (it->second.sizes() != t.sizes()) throw DataError(src, 0, "shape of " + name + " differs from its config");
    t.copy_(it->second);
  };
  for (auto& p : m.named_parameters(true)) copy(p.key(), p.value());
  for (auto& b : m.named_buffers(true)) copy(b.key(), b.value());
}

}  // namespace

torch::Tensor mean_over_batches(model::TLMoEModel& m, const std::vector<data::Example>& ex, size_t size, int64_t pad,
                                int64_t start, const std::function<torch::Tensor(const data::Batch&)>& per_batch) {
  torch::NoGradGuard g;
  m->eval();
  auto sum = torch::zeros({m->options().layer.d_model}, torch::kDouble);
  int64_t rows = 0;
  for (size_t i = 0; i < ex.size(); i += size) {
    std::vector<const data::Example*> b;
    for (size_t j = i; j < std::min(ex.size(), i + size); ++j) b.push_back(&ex[j]);
    auto v = per_batch(data::collate(b, std::vector<size_t>(b.size(), 0), pad, start));  // [rows,D]
    sum += v.to(torch::kDouble).sum(0);
    rows += v.size(0);
  }
  return (sum / static_cast<double>(std::max<int64_t>(rows, 1))).to(torch::kFloat);
}

torch::Tensor textemb_encoder_mean(model::TLMoEModel& m, const std::vector<data::Example>& ex, int64_t pad, int64_t start) {
  return mean_over_batches(m, ex, 16, pad, start, [&](const data::Batch& batch) {
    model::RouteContext ctx;
    auto h = m->encode(batch.input_ids, batch.input_mask, m->routes(batch.task_ids, ctx));  // [B,S,D]
    auto mask = batch.input_mask.unsqueeze(-1).to(h.scalar_type());
    return (h * mask).sum(1) / mask.sum(1);  // [B,D]: the mean over real tokens
  });
}

torch::Tensor textemb_reference(model::TLMoEModel& m, const std::vector<data::Example>& ex, int64_t pad, int64_t start) {
  return mean_over_batches(m, ex, 8, pad, start, [&](const data::Batch& batch) {
    model::RouteContext ctx;
    const auto routes = m->routes(batch.task_ids, ctx);
    auto enc = m->encode(batch.input_ids, batch.input_mask, routes);
    // the input shifted right behind the start token, pads and all, as the decoder's input
    auto shifted = torch::cat({torch::full({batch.input_ids.size(0), 1}, start, batch.input_ids.options()),
                               batch.input_ids.slice(1, 0, batch.input_ids.size(1) - 1)},
                              1);
    return m->decode(shifted, enc, batch.input_mask, routes).mean(1);  // [B,D]: every position, pads included
  });
}

namespace {

torch::Tensor fisher(model::TLMoEModel& m, const std::vector<data::Example>& ex, const Config& cfg, int64_t pad,
                     int64_t start, const std::string& what) {
  std::vector<ParamGroup> groups(1);
  groups[0].name = "adapters";
  groups[0].lr = cfg.task_rep.fisher_lr;
  groups[0].weight_decay = 0.01;
  std::vector<torch::Tensor> weights;  // adapter weight matrices, named-parameter order
  for (auto& p : m->named_parameters(true)) {
    const bool adapter = p.key().find(".adapters.") != std::string::npos;
    p.value().set_requires_grad(adapter);
    if (!adapter) continue;
    groups[0].params.push_back(p.value());
    groups[0].param_names.push_back(p.key());
    if (p.key().size() > 7 && p.key().compare(p.key().size() - 7, 7, ".weight") == 0) weights.push_back(p.value());
  }
  AdamW opt(groups, AdamWOptions{});
  FinetuneOptions fo;  // the adapters alone, loss averaged over target tokens (docs/method.md §5.3)
  fo.steps = cfg.task_rep.fisher_steps;
  fo.batch_size = cfg.task_rep.fisher_batch_size;
  fo.label_smoothing = cfg.train.label_smoothing;
  fo.loss_reduction = "mean";
  fo.seed = static_cast<uint64_t>(cfg.train.seed);
  train_steps(m, ex, opt, groups[0].params, fo, pad, start, what);
  // Empirical diagonal Fisher: per example, summed loss, no dropout.
  m->eval();
  LossOptions lo;
  lo.epsilon = cfg.train.label_smoothing;
  lo.pad_id = pad;
  lo.reduction = "sum";
  std::vector<torch::Tensor> acc;
  for (auto& w : weights) acc.push_back(torch::zeros_like(w, torch::kDouble));
  for (const auto& e : ex) {
    data::Batch b = data::collate({&e}, {0}, pad, start);
    model::RouteContext ctx;
    auto logits = m->forward(b.input_ids, b.input_mask, b.decoder_input_ids, m->routes(b.task_ids, ctx));
    label_smoothed_nll(logits, b.target_ids, lo).loss.backward();
    for (size_t i = 0; i < weights.size(); ++i) acc[i] += weights[i].grad().to(torch::kDouble).square();
    opt.zero_grad();
  }
  std::vector<torch::Tensor> flat;
  for (auto& a : acc) flat.push_back((a / static_cast<double>(ex.size())).flatten());
  return torch::cat(flat).to(torch::kFloat);
}

// The token caches each task's representation is computed from (textemb: every k-shot train
// file; fisher: the first k-shot split; a task without k-shot files: its full train file), whether
// the task is an upstream one, and the reuse key of everything the result depends on.
struct RepInputs {
  std::vector<TaskFilesForRep> tasks;
  std::vector<bool> upstream;
  std::string key;
};

RepInputs rep_inputs(const Config& cfg, const json& man, const json& meta) {
  const std::string& kind = cfg.task_rep.kind;
  const json& tok = man.at("tokenizer");
  const fs::path cache(cache_dir(cfg));
  RepInputs in;
  std::ostringstream keysrc;
  keysrc << "kind=" << kind << ";dim=" << cfg.task_rep.dim << ";tokenizer=" << tok.at("fingerprint").get<std::string>()
         << ";meta=" << io::fnv1a64_hex(meta.dump());
  if (kind != "fisher" && textemb_variant(cfg) == "reference") keysrc << ";variant=reference";
  if (kind == "ft_textemb")
    keysrc << ";ft_steps=" << cfg.task_rep.ft_steps << ";ft_lr=" << cfg.task_rep.ft_lr << ";ft_bsz=" << cfg.task_rep.ft_batch_size
           << ";pool=" << cfg.task_rep.ft_pool << ";ls=" << cfg.train.label_smoothing << ";red=" << cfg.train.loss_reduction
           << ";seed=" << cfg.train.seed << ";compat=" << cfg.reference_compat;
  if (kind == "fisher")
    keysrc << ";adapter=" << cfg.task_rep.fisher_adapter_dim << ";steps=" << cfg.task_rep.fisher_steps
           << ";lr=" << cfg.task_rep.fisher_lr << ";bsz=" << cfg.task_rep.fisher_batch_size
           << ";ls=" << cfg.train.label_smoothing << ";seed=" << cfg.train.seed;
  for (auto it = man.at("tasks").begin(); it != man.at("tasks").end(); ++it) {
    TaskFilesForRep t;
    t.task = it.key();
    std::vector<std::pair<std::string, const json*>> kshot;
    const json* full = nullptr;
    for (const json& f : it.value().at("files")) {
      if (f.at("split") != "train") continue;
      if (f.at("kind") == "kshot") kshot.emplace_back(f.at("prefix").get<std::string>(), &f);
      else full = &f;
    }
    std::sort(kshot.begin(), kshot.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<const json*> use;
    if (!kshot.empty()) {
      if (kind == "fisher" || kind == "ft_textemb") use.push_back(kshot.front().second);
      else for (auto& [p, f] : kshot) use.push_back(f);
    } else if (full) {
      use.push_back(full);
    } else {
      throw DataError((cache / "manifest.json").string(), 0, "task '" + t.task + "' has no train file to compute its representation from");
    }
    for (const json* f : use) {
      t.files.push_back(cache / f->at("cache").get<std::string>());
      t.hashes.push_back(f->at("source_hash").get<std::string>());
      keysrc << ";" << t.task << ":" << t.hashes.back();
    }
    in.upstream.push_back(it.value().value("partition", "") == "train");
    in.tasks.push_back(std::move(t));
  }
  in.key = io::fnv1a64_hex(keysrc.str());
  return in;
}

// True (and rep filled) when the representation file holds this kind for this key.
bool reuse(TaskRepReport& rep, const std::string& kind, const std::string& key, std::ostream& log) {
  if (!fs::exists(rep.path)) return false;
  try {
    auto old = data::load_task_rep(rep.path);
    if (old.info.value("key", "") == key && old.kind == kind) {
      rep.reused = true;
      rep.dim = old.matrix.size(1);
      rep.raw_dim = old.info.value("raw_dim", rep.dim);
      rep.explained_variance = old.info.value("explained_variance", 1.0);
      log << "task representations (" << kind << "): up to date, reused " << rep.path.string() << "\n";
      return true;
    }
  } catch (const DataError& e) {
    log << "recomputing " << rep.path.string() << ": " << e.what() << "\n";
  }
  return false;
}

// The raw vector of every task [n, raw], from the source model (a routed source mixes its experts
// uniformly): textemb; ft_textemb with a fresh fine-tuned copy per task; fisher with a fresh adapter
// model per task.
torch::Tensor raw_vectors(const Config& cfg, const Config& scfg, const json& tok, const io::LoadedCheckpoint& ck,
                          const fs::path& src, const std::vector<TaskFilesForRep>& tasks, std::ostream& log) {
  const std::string& kind = cfg.task_rep.kind;
  const int64_t V = tok.at("vocab_size").get<int64_t>(), pad = tok.at("pad_id").get<int64_t>();
  const int64_t start = scfg.model.decoder_start == "eos" ? tok.at("eos_id").get<int64_t>() : tok.at("bos_id").get<int64_t>();
  Config mcfg = scfg;
  if (mcfg.model.experts > 1) mcfg.routing.baseline = "average";
  auto mopts = model::model_options(mcfg, V, pad);
  const int64_t n_src_tasks = static_cast<int64_t>(ck.meta.value("tasks", std::vector<std::string>{}).size());
  const std::string src_file = (src / "model.safetensors").string();

  log << "task representations (" << kind << ") for " << tasks.size() << " tasks from " << src.string() << "\n";
  std::vector<torch::Tensor> raw;
  torch::NoGradGuard outer_off;  // re-enabled below where gradients are needed
  model::TLMoEModel base(mopts, model::router_options(mcfg), model::routing_policy(mcfg), std::max<int64_t>(1, n_src_tasks));
  load_backbone(*base, ck.model, src_file);
  const auto t0 = std::chrono::steady_clock::now();
  // a fresh copy of the source per task, its dropout (and adapter initialisation) seeded by the task's index
  auto fresh_copy = [&](size_t i, const model::ModelOptions& o) {
    torch::manual_seed(static_cast<uint64_t>(cfg.train.seed) + i);
    model::TLMoEModel m(o, model::router_options(mcfg), model::routing_policy(mcfg), std::max<int64_t>(1, n_src_tasks));
    load_backbone(*m, ck.model, src_file);
    return m;
  };
  for (size_t i = 0; i < tasks.size(); ++i) {
    auto ex = load_examples(tasks[i].files, V);
    if (ex.empty()) throw DataError(tasks[i].files.front().string(), 0, "no examples");
    std::string note;
    if (kind == "textemb") {
      raw.push_back(textemb_variant(cfg) == "reference" ? textemb_reference(base, ex, pad, start)
                                                        : textemb_encoder_mean(base, ex, pad, start));
    } else if (kind == "ft_textemb") {
      torch::AutoGradMode on(true);
      auto m = fresh_copy(i, mopts);
      const double tail = finetune_whole_model(m, ex, finetune_options(cfg), pad, start, tasks[i].files.front().string());
      if (std::isfinite(tail)) note = ", fine-tuning loss " + std::to_string(tail);
      raw.push_back(ft_textemb_vector(m, ex, pad, start, textemb_variant(cfg), cfg.task_rep.ft_pool));
    } else {
      torch::AutoGradMode on(true);
      auto aopts = mopts;
      aopts.layer.adapter_dim = cfg.task_rep.fisher_adapter_dim;
      auto m = fresh_copy(i, aopts);
      raw.push_back(fisher(m, ex, cfg, pad, start, tasks[i].files.front().string()));
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log << "  [" << i + 1 << "/" << tasks.size() << "] " << tasks[i].task << " (" << ex.size() << " examples" << note << ", "
        << static_cast<int64_t>(secs) << " s)\n";
  }
  return torch::stack(raw).to(torch::kDouble);
}

// PCA of n centred upstream vectors has at most n - 1 components with variance.
void check_pca_dim(int64_t dim, int64_t n_up) {
  if (dim > n_up - 1)
    throw ConfigError("", "task_rep.dim",
                      std::to_string(dim) + " is too large: PCA of the representations of " + std::to_string(n_up) +
                          " upstream tasks (centred) has at most " + std::to_string(n_up - 1) +
                          " components that carry variance; set task_rep.dim <= " + std::to_string(std::max<int64_t>(n_up - 1, 1)) +
                          (n_up < 2 ? " (and train on more upstream tasks)" : ""));
}

// task_rep.dim against the data, before any representation is computed: the raw size (TextEmb:
// the source model's d_model; Fisher: the adapter weights, far more than any task count) and the
// PCA bound.
void check_dim_early(const Config& cfg, const Config& scfg, int64_t n_up) {
  const int64_t dim = cfg.task_rep.dim;
  if (cfg.task_rep.kind == "textemb" || cfg.task_rep.kind == "ft_textemb") {
    const int64_t raw = scfg.model.d_model;
    if (dim > raw)
      throw ConfigError("", "task_rep.dim",
                        std::to_string(dim) + " is larger than the " + cfg.task_rep.kind + " vectors (the source model's d_model, " +
                            std::to_string(raw) + ")");
    if (dim < raw) check_pca_dim(dim, n_up);
  } else if (cfg.task_rep.kind == "fisher") {
    check_pca_dim(dim, n_up);
  }
}

// The matrix of the file: PCA fitted on the upstream rows when task_rep.dim is below the raw size
// (mean and components saved with it), scaled so the upstream entries have unit standard deviation.
data::TaskRepFile project(const Config& cfg, const torch::Tensor& R, const std::vector<int64_t>& up_idx,
                          TaskRepReport& rep) {
  const std::string& kind = cfg.task_rep.kind;
  const int64_t dim = cfg.task_rep.dim;
  auto up = R.index_select(0, torch::tensor(up_idx, torch::kLong));
  if (dim > rep.raw_dim)
    throw ConfigError("", "task_rep.dim",
                      std::to_string(dim) + " is larger than the " + kind + " vectors (" + std::to_string(rep.raw_dim) + ")");
  data::TaskRepFile out;
  out.kind = kind;
  torch::Tensor P;
  if (dim < rep.raw_dim) {
    check_pca_dim(dim, static_cast<int64_t>(up_idx.size()));
    auto mu = up.mean(0);
    auto svd = torch::linalg_svd(up - mu, /*full_matrices=*/false);
    auto S = std::get<1>(svd), Vh = std::get<2>(svd);
    auto comps = Vh.slice(0, 0, dim);  // [dim, raw]
    P = torch::matmul(R - mu, comps.t());
    auto var = S.square();
    const double total = var.sum().item<double>();
    rep.explained_variance = total > 0 ? var.slice(0, 0, dim).sum().item<double>() / total : 1.0;
    out.extra.emplace_back("pca.mean", mu.to(torch::kFloat));
    out.extra.emplace_back("pca.components", comps.to(torch::kFloat));
  } else {
    P = R;
  }
  auto up_p = P.index_select(0, torch::tensor(up_idx, torch::kLong));
  const double sd = up_p.numel() > 1 ? up_p.std().item<double>() : 1.0;
  const double scale = sd > 0 ? 1.0 / sd : 1.0;
  out.matrix = (P * scale).to(torch::kFloat);
  out.extra.emplace_back("raw", R.to(torch::kFloat));
  out.info = {{"pca", dim < rep.raw_dim}, {"scale", scale}};
  return out;
}

}  // namespace

std::string textemb_variant(const Config& cfg) {
  if (cfg.reference_compat && !cfg.is_explicit("task_rep.textemb_variant")) return "reference";
  return cfg.task_rep.textemb_variant;
}

TaskRepReport compute_task_reps(const Config& cfg, std::ostream& log) {
  const std::string& kind = cfg.task_rep.kind;
  TaskRepReport rep;
  rep.path = data::task_rep_path(cfg);
  if (kind == "learned") return rep;
  if (cfg.task_rep.source_checkpoint.empty())
    throw ConfigError("", "task_rep.source_checkpoint",
                      "task_rep.kind = " + kind + " needs a checkpoint to compute representations with "
                      "(e.g. the last/ directory of an upstream vanilla `tlmoe train` run)");
  const fs::path src(cfg.task_rep.source_checkpoint);
  auto ck = io::load_checkpoint(src, /*with_optimizer=*/false);
  const json man = data::read_preprocess_manifest(cfg);
  const json& tok = man.at("tokenizer");
  if (ck.meta.value("tokenizer_fingerprint", "") != tok.at("fingerprint").get<std::string>())
    throw DataError((src / "meta.json").string(), 0,
                    "task_rep.source_checkpoint was trained with another tokenizer than this dataset's");
  Config scfg = checkpoint_config(src, ck.meta);
  if (kind == "fisher" && scfg.model.experts != 1)
    throw ConfigError("", "task_rep.source_checkpoint",
                      "fisher representations need a dense (model.experts = 1) checkpoint; " + src.string() +
                          " has " + std::to_string(scfg.model.experts) + " experts");
  const RepInputs in = rep_inputs(cfg, man, ck.meta);
  rep.tasks = static_cast<int64_t>(in.tasks.size());
  if (reuse(rep, kind, in.key, log)) return rep;
  check_dim_early(cfg, scfg, static_cast<int64_t>(std::count(in.upstream.begin(), in.upstream.end(), true)));
  io::DirLock lock(cache_dir(cfg), log);  // one writer of the cache's representations at a time

  auto R = raw_vectors(cfg, scfg, tok, ck, src, in.tasks, log);  // [n, raw]
  rep.raw_dim = R.size(1);
  const int64_t dim = cfg.task_rep.dim;
  rep.dim = dim;
  std::vector<int64_t> up_idx;
  for (size_t i = 0; i < in.upstream.size(); ++i)
    if (in.upstream[i]) up_idx.push_back(static_cast<int64_t>(i));
  if (up_idx.empty())
    throw DataError((fs::path(cache_dir(cfg)) / "manifest.json").string(), 0, "no upstream (\"train\") tasks to fit on");
  data::TaskRepFile out = project(cfg, R, up_idx, rep);
  for (auto& t : in.tasks) out.tasks.push_back(t.task);
  const json projection = out.info;
  out.info = {{"key", in.key},
              {"source_checkpoint", src.string()},
              {"source_step", ck.meta.value("step", 0)},
              {"tokenizer_fingerprint", tok.at("fingerprint")},
              {"raw_dim", rep.raw_dim},
              {"pca", projection.at("pca")},
              {"explained_variance", rep.explained_variance},
              {"scale", projection.at("scale")},
              {"upstream_tasks", static_cast<int64_t>(up_idx.size())}};
  if (kind == "fisher")
    out.info["fisher"] = {{"adapter_dim", cfg.task_rep.fisher_adapter_dim}, {"steps", cfg.task_rep.fisher_steps},
                          {"lr", cfg.task_rep.fisher_lr}, {"batch_size", cfg.task_rep.fisher_batch_size}};
  if (kind == "ft_textemb")
    out.info["ft_textemb"] = {{"steps", cfg.task_rep.ft_steps}, {"lr", cfg.task_rep.ft_lr},
                              {"batch_size", cfg.task_rep.ft_batch_size}, {"pool", cfg.task_rep.ft_pool}};
  if (kind != "fisher") out.info["variant"] = textemb_variant(cfg);
  data::save_task_rep(rep.path, out);
  log << "task representations: " << in.tasks.size() << " x " << dim << " (raw " << rep.raw_dim;
  if (dim < rep.raw_dim) log << ", PCA on " << up_idx.size() << " upstream tasks keeps " << rep.explained_variance * 100 << "% of the variance";
  log << ") -> " << rep.path.string() << "\n";
  return rep;
}

}  // namespace tlmoe::train
