#include "analysis/analyze.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <set>

#include "analysis/analysis_run.h"
#include "metrics/health.h"
#include "analysis/plot.h"
#include "common/error.h"
#include "data/task_meta.h"
#include "io/atomic_file.h"
#include "model/selection.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::analysis {

using namespace detail;

// ---- counterfactual routes -----------------------------------------------------------------

ExpertRef parse_expert_ref(const std::string& text, const std::vector<std::string>& layers, std::int64_t experts,
                           const std::string& flag) {
  const auto L = static_cast<std::int64_t>(layers.size());
  const std::string usage = flag + " '" + text + "': expected LAYER:EXPERT with LAYER one of " + join(layers, ", ") +
                            " (or 1.." + std::to_string(L) + ") and EXPERT 1.." + std::to_string(experts);
  const auto colon = text.find(':');
  if (colon == std::string::npos || text.find(':', colon + 1) != std::string::npos) throw UsageError(usage);
  const std::string ls = text.substr(0, colon);
  std::string es = text.substr(colon + 1);
  auto parse_int = [](const std::string& s, std::int64_t& v) {
    if (s.empty()) return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
  };
  ExpertRef ref;
  auto it = std::find(layers.begin(), layers.end(), ls);
  std::int64_t v = 0;
  if (it != layers.end()) {
    ref.layer = it - layers.begin();
  } else if (parse_int(ls, v) && v >= 1 && v <= L) {
    ref.layer = v - 1;
  } else {
    throw UsageError(usage);
  }
  if (!es.empty() && (es[0] == 'e' || es[0] == 'E')) es = es.substr(1);
  if (!parse_int(es, v) || v < 1 || v > experts) throw UsageError(usage);
  ref.expert = v - 1;
  return ref;
}

std::string expert_ref_name(const ExpertRef& r, const std::vector<std::string>& layers) {
  const auto l = static_cast<std::size_t>(r.layer);
  return (l < layers.size() ? layers[l] : "layer" + std::to_string(r.layer + 1)) + ":" +
         expert_name(static_cast<std::size_t>(r.expert));
}

std::vector<model::LayerRoute> ablate_experts(model::TLMoEModelImpl& m, const torch::Tensor& task_ids,
                                              std::vector<model::LayerRoute> routes,
                                              const std::vector<ExpertRef>& ablated, double tau) {
  if (!m.has_router())
    throw std::invalid_argument("ablate_experts: the model has no learned router (routing.baseline = " +
                                m.policy().baseline + ")");
  const std::int64_t L = m.num_layers(), E = m.options().experts;
  if (static_cast<std::int64_t>(routes.size()) != L)
    throw std::invalid_argument("ablate_experts: " + std::to_string(routes.size()) + " routes for " +
                                std::to_string(L) + " layers");
  std::vector<std::set<std::int64_t>> per_layer(static_cast<std::size_t>(L));
  for (const auto& a : ablated) {
    if (a.layer < 0 || a.layer >= L || a.expert < 0 || a.expert >= E)
      throw std::invalid_argument("ablate_experts: expert " + std::to_string(a.expert) + " of layer " +
                                  std::to_string(a.layer) + " is outside " + std::to_string(L) + " layers x " +
                                  std::to_string(E) + " experts");
    per_layer[static_cast<std::size_t>(a.layer)].insert(a.expert);
  }
  for (std::int64_t l = 0; l < L; ++l)
    if (static_cast<std::int64_t>(per_layer[static_cast<std::size_t>(l)].size()) == E)
      throw std::invalid_argument("ablate_experts: every expert of layer " + std::to_string(l) + " is ablated");
  if (ablated.empty()) return routes;

  torch::NoGradGuard no_grad;
  auto logits = m.router_logits(task_ids).detach().clone();  // [L,B,E]
  const double neg_inf = -std::numeric_limits<double>::infinity();
  for (const auto& a : ablated) logits.select(0, a.layer).select(1, a.expert).fill_(neg_inf);
  model::SelectionOptions s;
  s.kind = m.policy().selection;
  s.tau = tau;
  s.top_k = m.policy().top_k;
  s.training = false;
  s.sample_at_eval = false;
  model::Routes r = model::select_routes(logits, s);
  const auto dev = task_ids.device();
  for (std::int64_t l = 0; l < L; ++l) {
    if (per_layer[static_cast<std::size_t>(l)].empty()) continue;
    auto& out = routes[static_cast<std::size_t>(l)];
    out.weights = r.weights[l].to(dev, out.weights.defined() ? out.weights.scalar_type() : r.weights.scalar_type());
    out.indices = r.hard ? r.indices[l].to(dev) : torch::Tensor();
    out.sparse = r.hard;
  }
  return routes;
}

std::vector<model::LayerRoute> task_routes(model::TLMoEModelImpl& m, std::int64_t source, std::int64_t batch,
                                           const torch::Device& device, double tau, std::uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto ids = torch::full({batch}, source, torch::TensorOptions().dtype(torch::kLong).device(device));  // [B]
  return eval_routes(m, ids, tau, seed);
}

// ---- config ------------------------------------------------------------------------------------

namespace {

// A Hugging Face directory is a dense BART: no router, no routes.
void refuse_hf_checkpoint(const std::string& checkpoint) {
  if (checkpoint.rfind("hf:", 0) == 0)
    throw UsageError("analyze-routes: " + checkpoint +
                     " is a Hugging Face BART (one dense model, no router): it has no routes to analyze. Train a "
                     "TL-MoE from it (model.init_from: " + checkpoint + ") and analyze that run's checkpoint");
}

}  // namespace

Config analysis_config(const ConfigSources& sources, const std::string& checkpoint) {
  refuse_hf_checkpoint(checkpoint);
  if (!sources.file.empty()) return load_config(sources);
  if (checkpoint.empty()) throw UsageError("analyze-routes: --checkpoint is required");
  const fs::path meta = fs::path(checkpoint) / "meta.json";
  if (!fs::exists(meta))
    throw DataError(meta.string(), 0, "not a tlmoe checkpoint (no meta.json); pass a run's best/ or last/ folder");
  const auto j = data::read_json_file(meta);
  if (!j.contains("config") || !j["config"].is_string())
    throw DataError(meta.string(), 0, "checkpoint has no config (not written by tlmoe train?)");
  // load_config reads files: the saved config goes through a temporary one so that --set applies.
  const fs::path tmp = fs::temp_directory_path() / ("tlmoe-analyze-" + std::to_string(::getpid()) + ".yaml");
  io::write_file_atomic(tmp, j["config"].get<std::string>());
  struct Remove {
    fs::path p;
    ~Remove() {
      std::error_code ec;
      fs::remove(p, ec);
    }
  } remove{tmp};
  try {
    return load_config({tmp.string(), sources.overrides});
  } catch (const ConfigError& e) {
    if (e.where().rfind(tmp.string(), 0) != 0) throw;  // a --set problem: its message names it
    throw DataError(meta.string(), 0,
                    std::string("the config saved in the checkpoint does not load with this tlmoe (") + e.what() +
                        "); pass --config");
  }
}

AnalysisReport analyze_routes(const AnalyzeOptions& o) {
  Analysis a(o);
  return a.run();
}

namespace detail {

namespace {

// The checkpoint to analyse, after the checks of the options that need nothing loaded.
model::LoadedModel load_checked(const AnalyzeOptions& o) {
  if (o.checkpoint.empty()) throw UsageError("analyze-routes: --checkpoint is required");
  if (o.out_dir.empty()) throw UsageError("analyze-routes: --out is required");
  if (o.max_examples < 0) throw UsageError("analyze-routes: --max-examples must be >= 0");
  refuse_hf_checkpoint(o.checkpoint);
  if (!o.compare.empty()) refuse_hf_checkpoint(o.compare);
  model::LoadedModel lm = model::load_model(o.checkpoint);
  if (const auto w = model::non_finite_warning(lm, o.checkpoint); !w.empty())
    (o.log ? *o.log : std::cerr) << "warning: " << w << "\n";
  model::use_evaluation_tau(lm, o.cfg);
  return lm;
}

}  // namespace

Analysis::Analysis(const AnalyzeOptions& options)
    : o(options), cfg(options.cfg), log(options.log ? *options.log : std::cerr), lm(load_checked(options)),
      m(*lm.model) {
  if (m.options().experts <= 1)
    throw UsageError("analyze-routes: " + o.checkpoint +
                     " is a vanilla model (model.experts = 1): it has no routes, so there is nothing to analyze");
  rl = routed_layers(m);
  if (rl.index.empty())
    throw UsageError("analyze-routes: " + o.checkpoint + " has no routed layer (every layer is a shared vanilla layer)");
  E = m.options().experts;
  n = lm.tasks.size();
}

AnalysisReport Analysis::run() {
  check_counterfactual_inputs();
  load_routes();
  write_routes();
  route_figures();
  statistics();
  dynamics();
  compare_runs();
  counterfactuals();
  const std::string summary = summary_text();
  stats["summary"] = summary;
  out.write("stats.json", stats.dump(1) + "\n");
  write_report(summary);
  staging->merge_into_final();
  out.dir = o.out_dir;
  AnalysisReport rep;
  rep.stats = stats;
  rep.summary = summary;
  rep.files = out.files;
  return rep;
}

void Analysis::figure(const std::string& stem, const std::string& title,
                      const std::function<void(const fs::path&)>& draw) {
  Output::Figure f;
  f.title = title;
  for (const auto& ext : exts) {
    const std::string rel = "figures/" + stem + ext;
    draw(out.dir / rel);
    out.files.push_back(rel);
    f.paths.push_back(rel);
  }
  out.figures.push_back(f);
}

std::size_t Analysis::count_part(const std::string& p) const {
  return static_cast<std::size_t>(std::count(partition.begin(), partition.end(), p));
}

// --ablate, --attribution, --force and --tasks, checked before any heavy work.
void Analysis::check_counterfactual_inputs() {
  for (const auto& a : o.ablate) {
    ExpertRef r = parse_expert_ref(a, rl.all, E, "--ablate");
    if (std::find(rl.index.begin(), rl.index.end(), r.layer) == rl.index.end())
      throw UsageError("analyze-routes: --ablate '" + a + "': layer " + rl.all[static_cast<std::size_t>(r.layer)] +
                       " is a shared (vanilla) layer without experts; routed layers: " + join(rl.names, ", "));
    if (std::find(ablate.begin(), ablate.end(), r) == ablate.end()) ablate.push_back(r);
  }
  if (!o.attribution) {
    std::map<std::int64_t, std::int64_t> per_layer;
    for (const auto& r : ablate)
      if (++per_layer[r.layer] == E)
        throw UsageError("analyze-routes: --ablate removes every expert of layer " +
                         rl.all[static_cast<std::size_t>(r.layer)] + "; leave at least one");
  }
  attribution = ablate;
  if (o.attribution && attribution.empty())
    for (std::int64_t l : rl.index)
      for (std::int64_t e = 0; e < E; ++e) attribution.push_back({l, e});
  if ((!ablate.empty() || o.attribution) && !m.has_router())
    throw UsageError("analyze-routes: --ablate / --attribution need a learned router; " + o.checkpoint +
                     " routes with the '" + m.policy().baseline + "' baseline");
  for (const auto& f : o.force) {
    const auto eq = f.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == f.size())
      throw UsageError("analyze-routes: --force '" + f + "': expected TASK=OTHER_TASK");
    const std::string t = f.substr(0, eq), src = f.substr(eq + 1);
    task_index(t, lm.tasks, "--force", o.checkpoint);
    task_index(src, lm.tasks, "--force", o.checkpoint);
    for (const auto& [prev, _] : force)
      if (prev == t) throw UsageError("analyze-routes: --force names task '" + t + "' twice");
    force.emplace_back(t, src);
  }
  if (!force.empty() && m.policy().baseline == "instance_random")
    throw UsageError("analyze-routes: --force needs task-level routes; " + o.checkpoint +
                     " routes every example at random (instance_random)");
  for (const auto& t : o.tasks) task_index(t, lm.tasks, "--tasks", o.checkpoint);
  for (const auto& t : o.dynamics_tasks) task_index(t, lm.tasks, "--dynamics-tasks", o.checkpoint);
  if (!o.tasks.empty() && ablate.empty() && !o.attribution)
    throw UsageError("analyze-routes: --tasks chooses the tasks of --ablate / --attribution; give one of them "
                     "(--force evaluates only the tasks it names)");
  counterfactual = !ablate.empty() || o.attribution || !force.empty();
  if (counterfactual && m.policy().sample_at_eval)
    log << "analyze-routes: warning: the checkpoint samples routes at eval (routing.eval_routes = sample); "
           "ablated layers use the deterministic eval selection instead\n";
}

// The routes and task metadata, in ontology order, and the head of stats.json.
void Analysis::load_routes() {
  meta0 = task_meta(cfg, lm.tasks, log);
  raw = compute_routes(lm, rl);
  const auto order = ontology_order(lm.tasks, meta0.top, meta0.sub);
  t1 = select_tasks(raw.t1, order);
  tt = select_tasks(raw.tau, order);
  for (std::size_t i : order) {
    partition.push_back(meta0.partition[i]);
    top.push_back(meta0.top[i]);
    sub.push_back(meta0.sub[i]);
    shown_cat.push_back(meta0.top[i].empty() ? "uncategorised" : meta0.top[i]);
  }
  for (std::size_t i = 0; i < n; ++i) row_of[t1.tasks[i]] = i;

  // Every output is written into a staged folder and moved into --out at the end: a failure (a full
  // disk) leaves no partial analysis there, and the folder's other files are kept.
  staging.emplace(o.out_dir);
  out.dir = staging->path();
  exts = figure_extensions(cfg.analysis.formats);
  stats["checkpoint"] = o.checkpoint;
  stats["step"] = lm.step;
  stats["tau"] = lm.tau;
  stats["selection"] = m.has_router() ? m.policy().selection : "baseline " + m.policy().baseline;
  stats["layers"] = rl.names;
  stats["experts"] = E;
  stats["tasks"] = {{"total", n}, {"seen", count_part("seen")}, {"dev", count_part("dev")},
                    {"unseen", count_part("unseen")}};
  stats["category_source"] = meta0.category_source;
  if (!meta0.not_in_ontology.empty()) stats["tasks_not_in_ontology"] = meta0.not_in_ontology;
  if (!lm.non_finite.empty()) stats["non_finite_weights"] = lm.non_finite;
  stats["upstream_health"] = ojson::parse(metrics::report_upstream_health(o.checkpoint, log).dump());
  log << "analyze-routes: " << n << " tasks, " << rl.names.size() << " routed layers x " << E << " experts, step "
      << lm.step << ", tau " << fmt(lm.tau) << "\n";
}

// routes.csv and routes.json.
void Analysis::write_routes() {
  std::vector<std::string> head = {"task", "partition", "category", "sub_category", "layer", "hard"};
  for (std::int64_t e = 0; e < E; ++e) head.push_back("tau1_" + expert_name(static_cast<std::size_t>(e)));
  for (std::int64_t e = 0; e < E; ++e) head.push_back("tau_" + expert_name(static_cast<std::size_t>(e)));
  std::string csv = csv_row(head);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t l = 0; l < t1.num_layers(); ++l) {
      std::vector<std::string> row = {t1.tasks[t], partition[t], top[t], sub[t], t1.layer_names[l],
                                      std::to_string(tt.hard(t, l) + 1)};
      for (std::size_t e = 0; e < t1.num_experts(); ++e) row.push_back(num(t1.at(t, l, e)));
      for (std::size_t e = 0; e < tt.num_experts(); ++e) row.push_back(num(tt.at(t, l, e)));
      csv += csv_row(row);
    }
  out.table("routes.csv", "Routes of every task: per routed layer the hard choice (1-based) and the weights at "
                          "tau = 1 and at the checkpoint's tau",
            csv);
  ojson j = route_table_to_json(t1);
  j["routes_t1"] = j["routes"];
  j["routes"] = route_table_to_json(tt)["routes"];
  j["hard"] = route_table_to_json(tt)["hard"];
  ojson info = ojson::object();
  for (std::size_t t = 0; t < n; ++t)
    info[t1.tasks[t]] = {{"partition", partition[t]}, {"category", top[t]}, {"sub_category", sub[t]}};
  ojson doc = {{"checkpoint", o.checkpoint}, {"step", lm.step}, {"tau", lm.tau}};
  for (auto it = j.begin(); it != j.end(); ++it) doc[it.key()] = it.value();
  doc["task_info"] = info;
  out.write("routes.json", doc.dump(1) + "\n");
}

// Heatmaps of the routes and the PCA of the task route vectors.
void Analysis::route_figures() {
  RouteTable shown1 = t1, shownt = tt;
  for (std::size_t t = 0; t < n; ++t) {
    const std::string suffix = partition[t] == "dev" ? " (dev)" : partition[t] == "unseen" ? " (unseen)" : "";
    shown1.tasks[t] += suffix;
    shownt.tasks[t] += suffix;
  }
  figure("heatmap_tau1", "Routes at tau = 1, grouped by category", [&](const fs::path& p) {
    plot_route_heatmap({shown1, shown_cat, sub, "Routes at tau = 1 (softmax of the router's logits)"}, p);
  });
  figure("heatmap_tau", "Routes at the evaluation temperature tau = " + fmt(lm.tau), [&](const fs::path& p) {
    plot_route_heatmap({shownt, shown_cat, sub, "Routes at the evaluation temperature tau = " + fmt(lm.tau)}, p);
  });
  if (n >= 2) {  // PCA needs two points
    const auto pc = pca(t1.task_vectors(), 2);
    stats["pca"] = {{"vectors", "tau=1 route vectors of every task"},
                    {"explained_variance_ratio", pc.explained_variance_ratio}};
    ScatterSpec sc;
    for (const auto& s : pc.scores) {
      sc.x.push_back(s[0]);
      sc.y.push_back(s[1]);
    }
    sc.category = shown_cat;
    sc.labels = shown1.tasks;
    sc.title = "Task route vectors (tau = 1), PCA";
    sc.x_label = "PC1 (" + fmt(100 * pc.explained_variance_ratio[0], 3) + "% of variance)";
    sc.y_label = "PC2 (" + fmt(100 * pc.explained_variance_ratio[1], 3) + "% of variance)";
    figure("pca", "PCA of the task route vectors (tau = 1), coloured by category",
           [&](const fs::path& p) { plot_scatter(sc, p); });
    std::string csv = csv_row({"task", "partition", "category", "sub_category", "pc1", "pc2"});
    for (std::size_t t = 0; t < n; ++t)
      csv += csv_row({t1.tasks[t], partition[t], top[t], sub[t], num(sc.x[t]), num(sc.y[t])});
    out.table("tables/pca.csv", "PCA coordinates of the tau = 1 route vectors", csv);
  }
}

}  // namespace detail

}  // namespace tlmoe::analysis
