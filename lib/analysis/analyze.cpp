#include "analysis/analyze.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

#include "analysis/plot.h"
#include "analysis/stats.h"
#include "common/error.h"
#include "common/strings.h"
#include "data/task_meta.h"
#include "io/atomic_file.h"
#include "model/selection.h"
#include "train/eval_tasks.h"
#include "train/evaluate.h"

namespace fs = std::filesystem;
using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace tlmoe::analysis {

namespace {

constexpr double kAlpha = 0.05;  // significance level of the per-layer tests and the permutation test

// ---- formatting ------------------------------------------------------------------------------

// The shortest text that reads back as exactly `v` (tables).
std::string num(double v) {
  if (std::isnan(v)) return "nan";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// `digits` significant digits (prose and Markdown tables).
std::string fmt(double v, int digits = 3) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string fmt_p(double p) {
  if (std::isnan(p)) return "n/a";
  if (p > 0 && p < 1e-4) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1e", p);
    return buf;
  }
  return fmt(p, 2);
}

std::string csv_row(const std::vector<std::string>& fields) {
  std::string s;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i) s += ',';
    s += csv_field(fields[i]);
  }
  s += '\n';
  return s;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

ojson finite_or_null(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }

ojson matrix_json(const std::vector<double>& v, std::size_t rows, std::size_t cols) {
  ojson m = ojson::array();
  for (std::size_t r = 0; r < rows; ++r) {
    ojson row = ojson::array();
    for (std::size_t c = 0; c < cols; ++c) row.push_back(finite_or_null(v[r * cols + c]));
    m.push_back(std::move(row));
  }
  return m;
}

std::string expert_name(std::size_t e) {
  std::string s = "e";
  s += std::to_string(e + 1);
  return s;
}

std::string display_partition(const std::string& p) { return p.empty() ? "-" : p; }

// ---- the model's routes ------------------------------------------------------------------------

// The layers of the router's L axis that hold experts (shared vanilla layers ignore their route).
struct RoutedLayers {
  std::vector<std::string> all;      // layer_names(encoder_layers, L)
  std::vector<std::int64_t> index;   // routed positions in `all`
  std::vector<std::string> names;    // their names
};

RoutedLayers routed_layers(model::TLMoEModelImpl& m) {
  RoutedLayers r;
  const std::int64_t enc = m.options().encoder_layers, L = m.num_layers();
  r.all = layer_names(enc, L);
  for (std::int64_t l = 0; l < L; ++l) {
    const bool routed = l < enc ? m.model->encoder->is_routed(l) : m.model->decoder->is_routed(l - enc);
    if (routed) {
      r.index.push_back(l);
      r.names.push_back(r.all[static_cast<std::size_t>(l)]);
    }
  }
  return r;
}

struct TaskRoutes {
  RouteTable t1;   // softmax of the logits at tau = 1 (baselines: their weights)
  RouteTable tau;  // at the checkpoint's tau
};

// The eval-mode routes of every task of the table, in table order, routed layers only.
TaskRoutes compute_routes(train::LoadedModel& lm, const RoutedLayers& rl) {
  torch::NoGradGuard no_grad;
  auto& m = *lm.model;
  const auto n = static_cast<std::int64_t>(lm.tasks.size());
  const std::int64_t E = m.options().experts;
  auto dev = m.final_logits_bias.device();
  auto ids = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(dev));  // [n]
  torch::Tensor w1, wt;                                                                  // [L,n,E]
  if (m.has_router()) {
    auto logits = m.router_logits(ids).to(torch::kCPU, torch::kDouble);  // [L,n,E]
    w1 = torch::softmax(logits, -1);
    wt = torch::softmax(logits / lm.tau, -1);
  } else {
    model::RouteContext ctx;
    ctx.tau = lm.tau;
    ctx.gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<std::uint64_t>(lm.cfg.train.seed));
    w1 = m.route_weights(ids, ctx).weights.to(torch::kCPU, torch::kDouble);  // [L,n,E]
    wt = w1;
  }
  auto fill = [&](const torch::Tensor& w) {
    RouteTable t;
    t.tasks = lm.tasks;
    t.layer_names = rl.names;
    t.experts = E;
    auto c = w.contiguous();
    auto a = c.accessor<double, 3>();
    for (std::int64_t ti = 0; ti < n; ++ti)
      for (std::int64_t l : rl.index)
        for (std::int64_t e = 0; e < E; ++e) t.probs.push_back(a[l][ti][e]);
    t.validate();
    return t;
  };
  return {fill(w1), fill(wt)};
}

// A table's layers `names`, in that order.
RouteTable select_layers(const RouteTable& t, const std::vector<std::string>& names) {
  std::vector<std::size_t> pos;
  for (const auto& n : names) {
    auto it = std::find(t.layer_names.begin(), t.layer_names.end(), n);
    if (it == t.layer_names.end()) throw std::invalid_argument("the routes have no layer '" + n + "'");
    pos.push_back(static_cast<std::size_t>(it - t.layer_names.begin()));
  }
  RouteTable out;
  out.tasks = t.tasks;
  out.layer_names = names;
  out.experts = t.experts;
  for (std::size_t ti = 0; ti < t.num_tasks(); ++ti)
    for (std::size_t l : pos) out.probs.insert(out.probs.end(), t.row(ti, l), t.row(ti, l) + t.num_experts());
  return out;
}

// ---- tasks: partition and category -------------------------------------------------------------

struct TaskMeta {
  std::vector<std::string> partition;  // seen | dev | unseen | "" (not in the split file)
  std::vector<std::string> top, sub;   // "" = uncategorised
  std::string category_source;         // for the report
};

TaskMeta task_meta(const Config& cfg, const std::vector<std::string>& tasks, std::ostream& log) {
  TaskMeta meta;
  const std::size_t n = tasks.size();
  meta.partition.assign(n, "");
  meta.top.assign(n, "");
  meta.sub.assign(n, "");
  const fs::path splits = splits_path(cfg);
  if (fs::exists(splits)) {
    const auto s = data::load_splits(splits);
    for (std::size_t i = 0; i < n; ++i) {
      const std::string p = s.partition_of(tasks[i]);
      meta.partition[i] = p == "train" ? "seen" : p == "test" ? "unseen" : p;
    }
  } else {
    log << "analyze-routes: warning: no split file at " << splits.string() << ": partitions unknown\n";
  }

  const bool explicit_ontology = !cfg.analysis.ontology.empty();
  const fs::path onto_path = explicit_ontology ? fs::path(cfg.analysis.ontology) : fs::path(ontology_path(cfg));
  if (explicit_ontology && !fs::exists(onto_path))
    throw DataError(onto_path.string(), 0, "no such ontology file (analysis.ontology / --ontology)");
  std::size_t from_ontology = 0, from_tasks = 0;
  if (fs::exists(onto_path)) {
    const auto onto = data::load_ontology(onto_path);
    for (std::size_t i = 0; i < n; ++i)
      if (onto.contains(tasks[i])) {
        meta.top[i] = onto.of(tasks[i]).top;
        meta.sub[i] = onto.of(tasks[i]).sub;
        ++from_ontology;
      }
  }
  const fs::path tasks_file = tasks_path(cfg);
  if (fs::exists(tasks_file)) {
    const auto table = data::load_tasks(tasks_file);
    for (std::size_t i = 0; i < n; ++i)
      if (meta.top[i].empty() && table.contains(tasks[i]) && !table.info(tasks[i]).category.empty()) {
        meta.top[i] = table.info(tasks[i]).category;
        meta.sub[i] = table.info(tasks[i]).sub_category;
        ++from_tasks;
      }
  }
  std::vector<std::string> parts;
  if (from_ontology) parts.push_back(std::to_string(from_ontology) + " tasks from " + onto_path.string());
  if (from_tasks) parts.push_back(std::to_string(from_tasks) + " tasks from " + tasks_file.string());
  meta.category_source = parts.empty() ? std::string("none") : join(parts, ", ");
  if (from_ontology + from_tasks < n)
    log << "analyze-routes: warning: " << n - from_ontology - from_tasks
        << " tasks have no category (neither in " << onto_path.string() << " nor in " << tasks_file.string()
        << "): they are left out of the statistics\n";
  return meta;
}

// ---- output bookkeeping ----------------------------------------------------------------------

struct Output {
  fs::path dir;
  std::vector<std::string> files;  // relative to dir
  struct Figure {
    std::string title;
    std::vector<std::string> paths;  // one per format, PNG first
  };
  std::vector<Figure> figures;
  struct Table {
    std::string title, path;
  };
  std::vector<Table> tables;

  void write(const std::string& rel, const std::string& bytes) {
    io::write_file_atomic(dir / rel, bytes);
    files.push_back(rel);
  }
  void table(const std::string& rel, const std::string& title, const std::string& bytes) {
    write(rel, bytes);
    tables.push_back({title, rel});
  }
};

std::vector<std::string> figure_extensions(const std::string& formats) {
  if (formats == "png") return {".png"};
  if (formats == "svg") return {".svg"};
  return {".png", ".svg"};
}

// ---- counterfactual inputs -------------------------------------------------------------------

std::string suggest_task(const std::string& name, const std::vector<std::string>& tasks) {
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const auto& t : tasks) {
    const std::size_t d = edit_distance(name, t);
    if (d < best_d) best_d = d, best = t;
  }
  return best_d <= std::max<std::size_t>(2, name.size() / 3) ? " (did you mean '" + best + "'?)" : "";
}

std::int64_t task_index(const std::string& name, const std::vector<std::string>& tasks, const std::string& flag,
                        const std::string& checkpoint) {
  auto it = std::find(tasks.begin(), tasks.end(), name);
  if (it == tasks.end())
    throw UsageError("analyze-routes: " + flag + ": task '" + name + "' is not in the task table of " + checkpoint +
                     suggest_task(name, tasks));
  return it - tasks.begin();
}

// Eval routes of every task (table order), for finding the tasks whose route an edit changes.
std::vector<model::LayerRoute> eval_routes(model::TLMoEModelImpl& m, const torch::Tensor& ids, double tau,
                                           std::uint64_t seed) {
  model::RouteContext ctx;
  ctx.training = false;
  ctx.tau = tau;
  ctx.gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return m.routes(ids, ctx);
}

// Tasks (rows of ids) whose weights differ between two route sets.
std::vector<bool> changed_rows(const std::vector<model::LayerRoute>& a, const std::vector<model::LayerRoute>& b) {
  const std::int64_t B = a.empty() ? 0 : a[0].weights.size(0);
  std::vector<bool> out(static_cast<std::size_t>(B), false);
  for (std::size_t l = 0; l < a.size(); ++l) {
    auto diff = (a[l].weights.to(torch::kDouble) - b[l].weights.to(torch::kDouble)).abs().amax(1).cpu();  // [B]
    auto acc = diff.accessor<double, 1>();
    for (std::int64_t t = 0; t < B; ++t)
      if (acc[t] > 0) out[static_cast<std::size_t>(t)] = true;
  }
  return out;
}

struct TaskScore {
  std::string metric;
  double score = NAN;
  std::vector<std::int64_t> route;  // hard expert per layer (0-based), as evaluate_tasks reports it
};
using Scores = std::map<std::string, TaskScore>;

Scores run_eval(const AnalyzeOptions& o, const std::vector<std::string>& tasks, train::RouteEdit edit,
                std::ostream& log, bool forward_log) {
  Scores out;
  if (tasks.empty()) return out;
  train::EvalTasksOptions e;
  e.cfg = o.cfg;
  e.checkpoint = o.checkpoint;
  e.tasks = tasks;
  e.max_examples = o.max_examples;
  e.route_edit = std::move(edit);
  std::ostringstream quiet;
  e.log = forward_log ? &log : &quiet;
  const json s = train::evaluate_tasks(e);
  for (auto it = s.at("tasks").begin(); it != s.at("tasks").end(); ++it) {
    TaskScore ts;
    ts.metric = it.value().at("metric").get<std::string>();
    if (it.value().at("mean").is_number()) ts.score = it.value().at("mean").get<double>();
    if (it.value().contains("route")) ts.route = it.value().at("route").get<std::vector<std::int64_t>>();
    out[it.key()] = ts;
  }
  return out;
}

std::string route_text(const std::vector<std::int64_t>& route, const RoutedLayers& rl) {
  std::string s;
  for (std::size_t i = 0; i < rl.index.size(); ++i) {
    const auto l = static_cast<std::size_t>(rl.index[i]);
    if (l >= route.size()) continue;
    s += (s.empty() ? "" : " ") + rl.names[i] + ":" + expert_name(static_cast<std::size_t>(route[l]));
  }
  return s;
}

// ---- expert weights (for --compare) ----------------------------------------------------------

// Flattened parameters of every expert of router layer `l`: [E][P].
std::vector<torch::Tensor> expert_vectors(model::TLMoEModelImpl& m, std::int64_t l) {
  const std::int64_t enc = m.options().encoder_layers;
  std::vector<std::vector<torch::Tensor>> params;
  if (l < enc) {
    for (auto& ex : m.model->encoder->enc_routed[static_cast<std::size_t>(l)]->experts) params.push_back(ex->parameters());
  } else {
    for (auto& ex : m.model->decoder->dec_routed[static_cast<std::size_t>(l - enc)]->experts)
      params.push_back(ex->parameters());
  }
  std::vector<torch::Tensor> out;
  for (auto& p : params) {
    std::vector<torch::Tensor> flat;
    for (auto& t : p) flat.push_back(t.detach().to(torch::kCPU, torch::kDouble).flatten());
    out.push_back(torch::cat(flat));
  }
  return out;
}

// [E,E] cosine similarity between A's and B's experts of one layer, each expert taken relative to
// the mean of its layer's experts (experts initialised from one dense layer share most of their
// weights; the deviations are what tells them apart).
std::vector<double> expert_weight_similarity(model::TLMoEModelImpl& a, model::TLMoEModelImpl& b, std::int64_t l,
                                             const std::string& layer, const std::string& compare) {
  auto va = expert_vectors(a, l), vb = expert_vectors(b, l);
  const std::size_t E = va.size();
  if (vb.size() != E || va[0].numel() != vb[0].numel())
    throw UsageError("analyze-routes: --compare " + compare + ": the experts of layer " + layer +
                     " have another shape than the analysed checkpoint's");
  auto ma = torch::stack(va).mean(0), mb = torch::stack(vb).mean(0);
  std::vector<double> sim(E * E);
  for (std::size_t i = 0; i < E; ++i)
    for (std::size_t j = 0; j < E; ++j) {
      auto x = va[i] - ma, y = vb[j] - mb;
      const double nx = x.norm().item<double>(), ny = y.norm().item<double>();
      sim[i * E + j] = nx > 0 && ny > 0 ? (x * y).sum().item<double>() / (nx * ny) : 0.0;
    }
  return sim;
}

fs::path run_dir_of(const std::string& checkpoint) {
  fs::path p = fs::absolute(checkpoint).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.parent_path();
}

// ---- statistics helpers ----------------------------------------------------------------------

struct Agreement {
  double nmi = NAN, ari = NAN;
  std::vector<int> clusters;
  bool ok = false;
  std::string skipped;
};

Agreement cluster_agreement(const std::vector<std::vector<double>>& points, const Labeling& labels) {
  Agreement a;
  const std::size_t k = labels.num_classes();
  if (k < 2 || points.size() < k + 1) {
    a.skipped = "needs at least 2 categories and more tasks than categories";
    return a;
  }
  a.clusters = cluster_average_linkage(points, k, Metric::kEuclidean);
  a.nmi = normalized_mutual_info(a.clusters, labels.ids);
  a.ari = adjusted_rand_index(a.clusters, labels.ids);
  a.ok = true;
  return a;
}

struct Permutation {
  PermutationTestResult r;
  bool ok = false;
  std::string skipped;
};

Permutation permutation(const std::vector<std::vector<double>>& points, const Labeling& labels,
                        const Config& cfg) {
  Permutation p;
  std::vector<std::size_t> size(labels.num_classes(), 0);
  for (int id : labels.ids) ++size[static_cast<std::size_t>(id)];
  const bool same_pair = std::any_of(size.begin(), size.end(), [](std::size_t s) { return s >= 2; });
  if (labels.num_classes() < 2 || !same_pair) {
    p.skipped = "needs 2 categories and a category with at least 2 tasks";
    return p;
  }
  PermutationTestOptions po;
  po.metric = Metric::kEuclidean;
  po.permutations = cfg.analysis.permutations;
  po.seed = static_cast<std::uint64_t>(cfg.analysis.seed);
  p.r = same_category_permutation_test(points, labels.ids, po);
  p.ok = true;
  return p;
}

ojson agreement_json(const Agreement& a) {
  if (!a.ok) return {{"skipped", a.skipped}};
  return {{"method", "average linkage, euclidean, tau=1 route vectors"},
          {"k", *std::max_element(a.clusters.begin(), a.clusters.end()) + 1},
          {"nmi", a.nmi},
          {"ari", a.ari}};
}

ojson permutation_json(const Permutation& p) {
  if (!p.ok) return {{"skipped", p.skipped}};
  return {{"statistic", p.r.observed},   {"mean_same", p.r.mean_same},
          {"mean_different", p.r.mean_different}, {"p_value", p.r.p_value},
          {"permutations", p.r.permutations}, {"at_least_as_large", p.r.at_least_as_large},
          {"similarity", "-euclidean distance between tau=1 route vectors"}};
}

// The cell of largest lift for one category (hard counts, at least 2 tasks in the cell), over
// `layers`.
struct TopLift {
  std::string category, layer;
  std::size_t expert = 0;
  double lift = NAN, p_given = NAN, count = 0, row_total = 0;
  bool found = false;
};

TopLift top_lift(const std::vector<LayerAssociation>& assoc, const std::vector<std::size_t>& layers, std::size_t c) {
  TopLift best;
  for (std::size_t l : layers) {
    const auto& a = assoc[l];
    best.category = a.categories[c];
    const std::size_t E = a.experts;
    double row = 0;
    for (std::size_t e = 0; e < E; ++e) row += a.counts[c * E + e];
    for (std::size_t e = 0; e < E; ++e) {
      const double lift = a.lift[c * E + e], cnt = a.counts[c * E + e];
      if (cnt < 2 || !std::isfinite(lift)) continue;
      if (!best.found || lift > best.lift) {
        best = {a.categories[c], a.layer, e, lift, a.p_expert_given_category[c * E + e], cnt, row, true};
      }
    }
  }
  return best;
}

std::string plural(std::size_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// A uniform draw from [0, n) without modulo bias.
std::uint64_t bounded(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t v;
  do v = rng();
  while (v >= limit);
  return v % n;
}

// The p-value of one layer's chi-square statistic (hard choice x category) by shuffling the
// category labels, which keeps both margins of the table: (1 + #{shuffles with a statistic >=
// the observed one}) / (1 + permutations). Unlike the asymptotic chi-square distribution it is
// valid however small the expected counts are (a few tasks per category, as in the gym).
double chi_square_permutation_p(const RouteTable& t, std::size_t layer, const Labeling& labels,
                                std::int64_t permutations, std::uint64_t seed) {
  const std::size_t n = t.num_tasks(), E = t.num_experts(), C = labels.num_classes();
  std::vector<std::size_t> hard(n);
  for (std::size_t i = 0; i < n; ++i) hard[i] = t.hard(i, layer);
  std::vector<double> counts(C * E);
  auto statistic = [&](const std::vector<int>& ids) {
    std::fill(counts.begin(), counts.end(), 0.0);
    for (std::size_t i = 0; i < n; ++i) counts[static_cast<std::size_t>(ids[i]) * E + hard[i]] += 1;
    return chi_square_independence(counts, C, E).statistic;
  };
  const double observed = statistic(labels.ids);
  const double threshold = observed - 1e-9 * std::max(1.0, std::abs(observed));  // ties count as "as large"
  std::mt19937_64 rng(seed);
  std::vector<int> ids = labels.ids;
  std::int64_t ge = 0;
  for (std::int64_t p = 0; p < permutations; ++p) {
    for (std::size_t i = n; i > 1; --i) std::swap(ids[i - 1], ids[bounded(rng, i)]);
    if (statistic(ids) >= threshold) ++ge;
  }
  return static_cast<double>(1 + ge) / static_cast<double>(1 + permutations);
}

}  // namespace

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

Config analysis_config(const ConfigSources& sources, const std::string& checkpoint) {
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

// ---- the analysis ----------------------------------------------------------------------------

AnalysisReport analyze_routes(const AnalyzeOptions& o) {
  std::ostream& log = o.log ? *o.log : std::cerr;
  const Config& cfg = o.cfg;
  if (o.checkpoint.empty()) throw UsageError("analyze-routes: --checkpoint is required");
  if (o.out_dir.empty()) throw UsageError("analyze-routes: --out is required");
  if (o.max_examples < 0) throw UsageError("analyze-routes: --max-examples must be >= 0");

  train::LoadedModel lm = train::load_model(o.checkpoint);
  auto& m = *lm.model;
  if (m.options().experts <= 1)
    throw UsageError("analyze-routes: " + o.checkpoint +
                     " is a vanilla model (model.experts = 1): it has no routes, so there is nothing to analyze");
  const RoutedLayers rl = routed_layers(m);
  if (rl.index.empty())
    throw UsageError("analyze-routes: " + o.checkpoint + " has no routed layer (every layer is a shared vanilla layer)");
  const std::int64_t E = m.options().experts;
  const std::size_t n = lm.tasks.size();

  // ---- counterfactual inputs, checked before any heavy work ----
  std::vector<ExpertRef> ablate;
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
  std::vector<ExpertRef> attribution = ablate;
  if (o.attribution && attribution.empty())
    for (std::int64_t l : rl.index)
      for (std::int64_t e = 0; e < E; ++e) attribution.push_back({l, e});
  if ((!ablate.empty() || o.attribution) && !m.has_router())
    throw UsageError("analyze-routes: --ablate / --attribution need a learned router; " + o.checkpoint +
                     " routes with the '" + m.policy().baseline + "' baseline");
  std::vector<std::pair<std::string, std::string>> force;  // (task, source of its route)
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
  if (!o.tasks.empty() && ablate.empty() && !o.attribution)
    throw UsageError("analyze-routes: --tasks chooses the tasks of --ablate / --attribution; give one of them "
                     "(--force evaluates only the tasks it names)");
  const bool counterfactual = !ablate.empty() || o.attribution || !force.empty();
  if (counterfactual && m.policy().sample_at_eval)
    log << "analyze-routes: warning: the checkpoint samples routes at eval (routing.eval_routes = sample); "
           "ablated layers use the deterministic eval selection instead\n";

  // ---- routes and task metadata, in ontology order ----
  const TaskMeta meta0 = task_meta(cfg, lm.tasks, log);
  TaskRoutes raw = compute_routes(lm, rl);
  const auto order = ontology_order(lm.tasks, meta0.top, meta0.sub);
  const RouteTable t1 = select_tasks(raw.t1, order), tt = select_tasks(raw.tau, order);
  std::vector<std::string> partition, top, sub, shown_cat;
  for (std::size_t i : order) {
    partition.push_back(meta0.partition[i]);
    top.push_back(meta0.top[i]);
    sub.push_back(meta0.sub[i]);
    shown_cat.push_back(meta0.top[i].empty() ? "uncategorised" : meta0.top[i]);
  }
  std::map<std::string, std::size_t> row_of;  // task -> row of t1 / tt
  for (std::size_t i = 0; i < n; ++i) row_of[t1.tasks[i]] = i;
  auto count_part = [&](const std::string& p) {
    return static_cast<std::size_t>(std::count(partition.begin(), partition.end(), p));
  };

  Output out;
  out.dir = o.out_dir;
  fs::create_directories(out.dir);
  const auto exts = figure_extensions(cfg.analysis.formats);
  auto figure = [&](const std::string& stem, const std::string& title, const auto& draw) {
    Output::Figure f;
    f.title = title;
    for (const auto& ext : exts) {
      const std::string rel = "figures/" + stem + ext;
      draw(out.dir / rel);
      out.files.push_back(rel);
      f.paths.push_back(rel);
    }
    out.figures.push_back(f);
  };

  ojson stats;
  stats["checkpoint"] = o.checkpoint;
  stats["step"] = lm.step;
  stats["tau"] = lm.tau;
  stats["selection"] = m.has_router() ? m.policy().selection : "baseline " + m.policy().baseline;
  stats["layers"] = rl.names;
  stats["experts"] = E;
  stats["tasks"] = {{"total", n}, {"seen", count_part("seen")}, {"dev", count_part("dev")},
                    {"unseen", count_part("unseen")}};
  stats["category_source"] = meta0.category_source;
  log << "analyze-routes: " << n << " tasks, " << rl.names.size() << " routed layers x " << E << " experts, step "
      << lm.step << ", tau " << fmt(lm.tau) << "\n";

  // ---- routes.csv / routes.json ----
  {
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

  // ---- figures of the routes ----
  {
    RouteTable shown1 = t1, shownt = tt;
    for (std::size_t t = 0; t < n; ++t) {
      const std::string suffix = partition[t] == "dev" ? " (dev)" : partition[t] == "unseen" ? " (unseen)" : "";
      shown1.tasks[t] += suffix;
      shownt.tasks[t] += suffix;
    }
    figure("heatmap_tau1", "Routes at tau = 1, grouped by category", [&](const fs::path& p) {
      plot_route_heatmap({shown1, shown_cat, sub, "Routes at tau = 1 (softmax of the router's logits)"}, p);
    });
    figure("heatmap_tau", "Routes at the checkpoint's tau = " + fmt(lm.tau), [&](const fs::path& p) {
      plot_route_heatmap({shownt, shown_cat, sub, "Routes at the checkpoint's tau = " + fmt(lm.tau)}, p);
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

  // ---- statistics against the categories ----
  std::vector<std::size_t> cat_rows;
  for (std::size_t t = 0; t < n; ++t)
    if (!top[t].empty()) cat_rows.push_back(t);
  const RouteTable ct1 = select_tasks(t1, cat_rows);
  std::vector<std::string> cat_names;
  for (std::size_t t : cat_rows) cat_names.push_back(top[t]);
  const Labeling labels = encode_labels(cat_names);
  stats["categories"] = labels.names;
  stats["categorised_tasks"] = cat_rows.size();

  std::vector<LayerAssociation> hard_assoc, soft_assoc;
  std::vector<std::size_t> significant;  // layers whose permutation p < kAlpha
  std::vector<double> layer_perm_p;     // per layer, chi_square_permutation_p
  Agreement clusters;
  Permutation perm;
  std::vector<TopLift> lifts;
  const bool have_categories = labels.num_classes() >= 2;
  if (!have_categories) {
    log << "analyze-routes: warning: fewer than 2 task categories (" << meta0.category_source
        << "): no association, clustering or permutation statistics\n";
    stats["association"] = {{"skipped", "fewer than 2 categories"}};
  } else {
    hard_assoc = expert_category_associations(ct1, labels, Counting::kHard);
    soft_assoc = expert_category_associations(ct1, labels, Counting::kSoft);
    const std::size_t C = labels.num_classes(), Ls = hard_assoc.size();
    for (std::size_t l = 0; l < Ls; ++l)
      layer_perm_p.push_back(chi_square_permutation_p(ct1, l, labels, cfg.analysis.permutations,
                                                      static_cast<std::uint64_t>(cfg.analysis.seed)));
    for (std::size_t l = 0; l < Ls; ++l)
      if (layer_perm_p[l] < kAlpha) significant.push_back(l);
    std::size_t bonferroni = 0;
    for (std::size_t l = 0; l < Ls; ++l)
      if (layer_perm_p[l] < kAlpha / static_cast<double>(Ls)) ++bonferroni;

    ojson layers = ojson::array();
    std::string tests_csv = csv_row({"layer", "chi2", "dof", "p_value", "permutation_p_value", "cramers_v",
                                     "min_expected", "significant_0.05", "soft_chi2", "soft_p_value",
                                     "soft_cramers_v"});
    std::string assoc_csv = csv_row({"layer", "category", "expert", "tasks", "p_expert_given_category", "lift",
                                     "pmi_bits", "soft_mass", "soft_p_expert_given_category", "soft_lift"});
    for (std::size_t l = 0; l < Ls; ++l) {
      const auto& h = hard_assoc[l];
      const auto& s = soft_assoc[l];
      auto test_json = [](const ChiSquareTest& c) {
        return ojson{{"statistic", c.statistic}, {"dof", c.dof},          {"p_value", c.p_value},
                     {"cramers_v", c.cramers_v}, {"total", c.total},      {"min_expected", c.min_expected}};
      };
      ojson hard_test = test_json(h.chi2);
      hard_test["permutation_p_value"] = layer_perm_p[l];
      ojson lj = {{"layer", h.layer},
                  {"hard", hard_test},
                  {"soft_descriptive", test_json(s.chi2)},
                  {"significant", layer_perm_p[l] < kAlpha},
                  {"counts", matrix_json(h.counts, C, h.experts)},
                  {"p_expert_given_category", matrix_json(h.p_expert_given_category, C, h.experts)},
                  {"p_expert", h.p_expert},
                  {"lift", matrix_json(h.lift, C, h.experts)},
                  {"pmi_bits", matrix_json(h.pmi, C, h.experts)},
                  {"soft_p_expert_given_category", matrix_json(s.p_expert_given_category, C, s.experts)}};
      layers.push_back(lj);
      tests_csv += csv_row({h.layer, num(h.chi2.statistic), std::to_string(h.chi2.dof), num(h.chi2.p_value),
                            num(layer_perm_p[l]), num(h.chi2.cramers_v), num(h.chi2.min_expected),
                            layer_perm_p[l] < kAlpha ? "1" : "0",
                            num(s.chi2.statistic), num(s.chi2.p_value), num(s.chi2.cramers_v)});
      for (std::size_t c = 0; c < C; ++c)
        for (std::size_t e = 0; e < h.experts; ++e) {
          const std::size_t k = c * h.experts + e;
          assoc_csv += csv_row({h.layer, h.categories[c], expert_name(e), num(h.counts[k]),
                                num(h.p_expert_given_category[k]), num(h.lift[k]), num(h.pmi[k]), num(s.counts[k]),
                                num(s.p_expert_given_category[k]), num(s.lift[k])});
        }
    }
    std::vector<std::size_t> lift_layers = significant;
    if (lift_layers.empty()) {
      lift_layers.resize(Ls);
      std::iota(lift_layers.begin(), lift_layers.end(), std::size_t{0});
    }
    ojson lj = ojson::array();
    for (std::size_t c = 0; c < C; ++c) {
      TopLift t = top_lift(hard_assoc, lift_layers, c);
      if (!t.found) continue;
      lifts.push_back(t);
      lj.push_back({{"category", t.category}, {"layer", t.layer}, {"expert", expert_name(t.expert)},
                    {"lift", t.lift}, {"p_expert_given_category", t.p_given}, {"tasks", t.count},
                    {"category_tasks", t.row_total}});
    }
    std::vector<std::string> sig_names;
    for (std::size_t l : significant) sig_names.push_back(hard_assoc[l].layer);
    stats["association"] = {{"alpha", kAlpha},
                            {"counting", "hard choice per task (soft: tau=1 weight mass, descriptive only)"},
                            {"significance", "permutation p-value of the chi-square statistic (category labels "
                                             "shuffled, analysis.permutations, analysis.seed)"},
                            {"permutations", cfg.analysis.permutations},
                            {"significant_layers", sig_names},
                            {"significant_layers_bonferroni", bonferroni},
                            {"top_lift", lj},
                            {"layers", layers}};
    out.table("tables/layer_tests.csv", "Per layer: chi-square test of expert (hard choice) x category", tests_csv);
    out.table("tables/association.csv",
              "Per layer, category and expert: tasks, P(expert | category), lift, PMI (hard) and the soft mass",
              assoc_csv);
    figure("expert_usage", "Expert usage per category and layer, P(expert | category) of the hard choice",
           [&](const fs::path& p) {
             plot_grouped_bars(expert_usage_bars(hard_assoc, "P(expert | category), hard choice per task"), p);
           });

    const auto points = ct1.task_vectors();
    clusters = cluster_agreement(points, labels);
    perm = permutation(points, labels, cfg);
    stats["clustering"] = agreement_json(clusters);
    stats["permutation_test"] = permutation_json(perm);
    if (clusters.ok) {
      std::string csv = csv_row({"task", "partition", "category", "cluster"});
      for (std::size_t i = 0; i < cat_rows.size(); ++i)
        csv += csv_row({t1.tasks[cat_rows[i]], partition[cat_rows[i]], top[cat_rows[i]],
                        std::to_string(clusters.clusters[i] + 1)});
      out.table("tables/clusters.csv", "Average-linkage clusters of the tau = 1 route vectors (k = categories)", csv);
    }
    // The same on the seen and the unseen tasks alone.
    ojson by_part = ojson::object();
    for (const std::string part : {"seen", "unseen"}) {
      std::vector<std::size_t> rows;
      std::vector<std::string> names;
      for (std::size_t i = 0; i < cat_rows.size(); ++i)
        if (partition[cat_rows[i]] == part) {
          rows.push_back(i);
          names.push_back(cat_names[i]);
        }
      if (rows.empty()) continue;
      std::vector<std::vector<double>> pts;
      for (std::size_t i : rows) pts.push_back(points[i]);
      const Labeling lab = encode_labels(names);
      by_part[part] = {{"tasks", rows.size()},
                       {"categories", lab.num_classes()},
                       {"clustering", agreement_json(cluster_agreement(pts, lab))},
                       {"permutation_test", permutation_json(permutation(pts, lab, cfg))}};
    }
    stats["by_partition"] = by_part;
  }

  // ---- route dynamics over training ----
  std::string dynamics_text;
  {
    const fs::path routes_dir = run_dir_of(o.checkpoint) / "routes";
    std::vector<std::pair<std::int64_t, fs::path>> snaps;
    if (fs::is_directory(routes_dir))
      for (const auto& e : fs::directory_iterator(routes_dir)) {
        const std::string name = e.path().filename().string();
        if (name.rfind("step_", 0) != 0 || e.path().extension() != ".json") continue;
        std::int64_t step = 0;
        const std::string digits = name.substr(5, name.size() - 10);
        auto r = std::from_chars(digits.data(), digits.data() + digits.size(), step);
        if (r.ec != std::errc() || r.ptr != digits.data() + digits.size()) continue;
        snaps.emplace_back(step, e.path());
      }
    std::sort(snaps.begin(), snaps.end());
    if (snaps.size() < 2) {
      stats["dynamics"] = {{"skipped", "fewer than 2 route snapshots in " + routes_dir.string()}};
    } else {
      std::vector<RouteTable> tables;
      std::vector<std::int64_t> steps;
      std::string key;
      for (const auto& [step, path] : snaps) {
        const auto j = data::read_json_file(path);
        if (key.empty()) key = j.contains("routes_t1") ? "routes_t1" : "routes";
        RouteTable t = route_table_from_json(j, key, path.string());
        try {
          tables.push_back(select_layers(t, rl.names));
        } catch (const std::invalid_argument& e) {
          throw DataError(path.string(), 0, std::string(e.what()) + " (a snapshot of another model?)");
        }
        steps.push_back(step);
      }
      RouteDynamics d;
      try {
        d = route_dynamics(tables, steps);
      } catch (const std::invalid_argument& e) {
        throw DataError(routes_dir.string(), 0, std::string("route snapshots do not fit together: ") + e.what());
      }
      // Tasks in the figures' order, with their categories.
      std::vector<std::size_t> di;  // index into d.tasks
      for (std::size_t t = 0; t < n; ++t) {
        auto it = std::find(d.tasks.begin(), d.tasks.end(), t1.tasks[t]);
        if (it != d.tasks.end()) di.push_back(static_cast<std::size_t>(it - d.tasks.begin()));
      }
      auto cat_of = [&](const std::string& task) {
        auto it = row_of.find(task);
        return it == row_of.end() ? std::string("uncategorised") : shown_cat[it->second];
      };
      LineChartSpec ent;
      for (auto s : d.steps) ent.x.push_back(static_cast<double>(s));
      for (std::size_t i : di) {
        LineChartSpec::Series s;
        s.name = d.tasks[i];
        s.group = cat_of(d.tasks[i]);
        for (std::size_t k = 0; k < d.steps.size(); ++k) s.y.push_back(d.entropy[k][i]);
        ent.series.push_back(s);
      }
      const std::string which = key == "routes_t1" ? "tau = 1" : "the training tau";
      ent.title = "Mean route entropy per task (" + which + ") over training";
      ent.x_label = "step";
      ent.y_label = "entropy (nats, max " + fmt(std::log(static_cast<double>(E))) + ")";
      figure("dynamics_entropy", "Route entropy per task over training (" + which + ")",
             [&](const fs::path& p) { plot_lines(ent, p); });
      LineChartSpec ch;
      ch.x = ent.x;
      std::vector<std::string> cats;
      for (std::size_t i : di)
        if (std::find(cats.begin(), cats.end(), cat_of(d.tasks[i])) == cats.end()) cats.push_back(cat_of(d.tasks[i]));
      for (const auto& c : cats) {
        LineChartSpec::Series s;
        s.name = c;
        for (std::size_t k = 0; k < d.steps.size(); ++k) {
          double sum = 0;
          for (std::size_t i : di)
            if (cat_of(d.tasks[i]) == c) sum += static_cast<double>(d.changes[k][i]);
          s.y.push_back(sum);
        }
        ch.series.push_back(s);
      }
      ch.title = "Route changes since the previous snapshot (task-layers whose hard choice changed)";
      ch.x_label = "step";
      ch.y_label = "changed task-layers";
      figure("dynamics_changes", "Route changes per category between successive snapshots",
             [&](const fs::path& p) { plot_lines(ch, p); });
      std::string csv = csv_row({"step", "task", "category", "mean_entropy", "route_changes"});
      std::vector<double> mean_entropy;
      for (std::size_t k = 0; k < d.steps.size(); ++k) {
        double sum = 0;
        for (std::size_t i = 0; i < d.tasks.size(); ++i) {
          sum += d.entropy[k][i];
          csv += csv_row({std::to_string(d.steps[k]), d.tasks[i], cat_of(d.tasks[i]), num(d.entropy[k][i]),
                          std::to_string(d.changes[k][i])});
        }
        mean_entropy.push_back(sum / static_cast<double>(d.tasks.size()));
      }
      out.table("tables/dynamics.csv", "Per snapshot and task: mean route entropy and route changes", csv);
      stats["dynamics"] = {{"routes_dir", routes_dir.string()}, {"weights", key},   {"steps", d.steps},
                           {"mean_entropy", mean_entropy},      {"total_changes", d.total_changes}};
      dynamics_text = "Over " + plural(d.steps.size(), "route snapshot", "route snapshots") + " (steps " +
                      std::to_string(d.steps.front()) + "–" + std::to_string(d.steps.back()) +
                      "), the mean route entropy (" + which + ") went from " + fmt(mean_entropy.front()) + " to " +
                      fmt(mean_entropy.back()) + " nats (uniform: " + fmt(std::log(static_cast<double>(E))) +
                      "), and " + plural(static_cast<std::size_t>(d.total_changes.back()), "task-layer route", "task-layer routes") +
                      " changed between the last two snapshots.";
    }
  }

  // ---- comparison with a second run ----
  std::string compare_text;
  if (!o.compare.empty()) {
    train::LoadedModel lb = train::load_model(o.compare);
    if (lb.model->options().experts != E)
      throw UsageError("analyze-routes: --compare " + o.compare + " has " + std::to_string(lb.model->options().experts) +
                       " experts per layer, the analysed checkpoint " + std::to_string(E));
    const RoutedLayers rb = routed_layers(*lb.model);
    if (rb.names != rl.names || rb.all != rl.all)
      throw UsageError("analyze-routes: --compare " + o.compare + " routes layers " + join(rb.names, ", ") +
                       "; the analysed checkpoint routes " + join(rl.names, ", "));
    const TaskRoutes b = compute_routes(lb, rb);
    std::vector<std::vector<std::size_t>> perms;
    ojson sims = ojson::array();
    std::vector<double> matched_sim;
    for (std::size_t i = 0; i < rl.index.size(); ++i) {
      auto sim = expert_weight_similarity(m, *lb.model, rl.index[i], rl.names[i], o.compare);
      perms.push_back(align_experts(sim, static_cast<std::size_t>(E)));
      double s = 0;
      for (std::size_t e = 0; e < static_cast<std::size_t>(E); ++e) s += sim[e * static_cast<std::size_t>(E) + perms.back()[e]];
      matched_sim.push_back(s / static_cast<double>(E));
      sims.push_back(matrix_json(sim, static_cast<std::size_t>(E), static_cast<std::size_t>(E)));
    }
    std::size_t common = 0;
    for (const auto& t : raw.t1.tasks) common += b.t1.index_of(t) >= 0;
    if (common == 0)
      throw UsageError("analyze-routes: --compare " + o.compare + " has no task in common with " + o.checkpoint);
    const auto aligned = route_agreement(raw.t1, b.t1, perms);
    const auto plain = route_agreement(raw.t1, b.t1, {});
    ojson layers = ojson::array();
    std::string csv = csv_row({"layer", "matching", "mean_matched_similarity", "argmax_agreement",
                               "mean_total_variation", "unaligned_argmax_agreement", "unaligned_mean_total_variation"});
    double mean_agree = 0;
    for (std::size_t i = 0; i < aligned.size(); ++i) {
      std::vector<std::string> match;
      for (std::size_t e = 0; e < aligned[i].permutation.size(); ++e)
        match.push_back(expert_name(e) + "->" + expert_name(aligned[i].permutation[e]));
      layers.push_back({{"layer", aligned[i].layer},
                        {"matching", match},
                        {"similarity", sims[i]},
                        {"mean_matched_similarity", matched_sim[i]},
                        {"argmax_agreement", aligned[i].argmax_agreement},
                        {"mean_total_variation", aligned[i].mean_total_variation},
                        {"unaligned_argmax_agreement", plain[i].argmax_agreement},
                        {"unaligned_mean_total_variation", plain[i].mean_total_variation},
                        {"tasks", aligned[i].tasks}});
      csv += csv_row({aligned[i].layer, join(match, " "), num(matched_sim[i]), num(aligned[i].argmax_agreement),
                      num(aligned[i].mean_total_variation), num(plain[i].argmax_agreement),
                      num(plain[i].mean_total_variation)});
      mean_agree += aligned[i].argmax_agreement / static_cast<double>(aligned.size());
    }
    stats["compare"] = {{"checkpoint", o.compare},
                        {"alignment", "Hungarian matching of experts on the cosine similarity of their weights "
                                      "(each relative to its layer's mean expert)"},
                        {"tasks", common},
                        {"mean_argmax_agreement", mean_agree},
                        {"chance_argmax_agreement", 1.0 / static_cast<double>(E)},
                        {"layers", layers}};
    out.table("tables/compare.csv", "Route agreement per layer with " + o.compare + " after aligning experts", csv);
    std::size_t best = 0, worst = 0;
    for (std::size_t i = 0; i < aligned.size(); ++i) {
      if (aligned[i].argmax_agreement > aligned[best].argmax_agreement) best = i;
      if (aligned[i].argmax_agreement < aligned[worst].argmax_agreement) worst = i;
    }
    compare_text = "After aligning its experts by weight similarity, the run " + o.compare + " makes the same hard choice for " +
                   fmt(100 * mean_agree) + "% of (task, layer) routes on average over " + plural(common, "common task", "common tasks") +
                   " (chance " + fmt(100.0 / static_cast<double>(E)) + "%), from " + fmt(100 * aligned[worst].argmax_agreement) +
                   "% in " + aligned[worst].layer + " to " + fmt(100 * aligned[best].argmax_agreement) + "% in " +
                   aligned[best].layer + ".";
  }

  // ---- counterfactuals ----
  std::string cf_text;
  if (counterfactual) {
    std::vector<std::string> cf_tasks = o.tasks;
    if (cf_tasks.empty() && (!ablate.empty() || o.attribution))
      for (std::size_t t = 0; t < n; ++t)
        if (!partition[t].empty()) cf_tasks.push_back(t1.tasks[t]);
    std::vector<std::string> before_tasks = cf_tasks;
    for (const auto& [t, _] : force)
      if (std::find(before_tasks.begin(), before_tasks.end(), t) == before_tasks.end()) before_tasks.push_back(t);
    std::map<std::string, std::int64_t> id_of;
    for (std::size_t i = 0; i < n; ++i) id_of[lm.tasks[i]] = static_cast<std::int64_t>(i);
    const double tau = lm.tau;
    const auto seed = static_cast<std::uint64_t>(lm.cfg.train.seed);
    auto ids_all = torch::arange(static_cast<std::int64_t>(n), torch::kLong);
    std::vector<model::LayerRoute> base;
    {
      torch::NoGradGuard g;
      base = eval_routes(m, ids_all, tau, seed);
    }
    auto ablation_edit = [id_of, tau](std::vector<ExpertRef> refs) -> train::RouteEdit {
      return [id_of, tau, refs](const std::string& task, model::TLMoEModelImpl& mm, std::vector<model::LayerRoute> r) {
        const auto B = r.at(0).weights.size(0);
        auto ids = torch::full({B}, id_of.at(task), torch::TensorOptions().dtype(torch::kLong).device(r[0].weights.device()));
        return ablate_experts(mm, ids, std::move(r), refs, tau);
      };
    };
    // The tasks of cf_tasks whose eval route the ablation of `refs` changes (the others decode
    // exactly as before: their score is the baseline's).
    auto changed_by = [&](const std::vector<ExpertRef>& refs) {
      torch::NoGradGuard g;
      auto ab = ablate_experts(m, ids_all, base, refs, tau);
      const auto changed = changed_rows(base, ab);
      std::vector<std::string> out_tasks;
      for (const auto& t : cf_tasks)
        if (changed[static_cast<std::size_t>(id_of.at(t))]) out_tasks.push_back(t);
      return out_tasks;
    };

    log << "analyze-routes: counterfactuals: decoding " << before_tasks.size() << " tasks with the learned routes"
        << (o.max_examples > 0 ? " (first " + std::to_string(o.max_examples) + " test examples each)" : "") << "\n";
    const Scores before = run_eval(o, before_tasks, nullptr, log, true);
    ojson cf = {{"max_examples", o.max_examples}, {"tasks", cf_tasks.size()}};
    std::vector<std::string> sentences;
    auto category_of = [&](const std::string& t) { return shown_cat[row_of.at(t)]; };
    auto partition_of = [&](const std::string& t) { return display_partition(partition[row_of.at(t)]); };

    if (!ablate.empty() && !o.attribution) {
      std::vector<std::string> names;
      for (const auto& r : ablate) names.push_back(expert_ref_name(r, rl.all));
      const auto changed = changed_by(ablate);
      log << "analyze-routes: ablating " << join(names, ", ") << ": " << changed.size() << " of " << cf_tasks.size()
          << " tasks change route\n";
      const Scores after = run_eval(o, changed, ablation_edit(ablate), log, false);
      std::string csv = csv_row({"task", "partition", "category", "metric", "before", "after", "change", "route_before",
                                 "route_after", "route_changed"});
      ojson rows = ojson::array();
      double sum = 0;
      std::size_t cnt = 0;
      std::string worst;
      double worst_change = 0;
      for (const auto& t : cf_tasks) {
        const auto& b = before.at(t);
        const bool ch = after.count(t) > 0;
        const TaskScore& a = ch ? after.at(t) : b;
        const double delta = a.score - b.score;
        if (ch && std::isfinite(delta)) {
          sum += delta, ++cnt;
          if (worst.empty() || delta < worst_change) worst = t, worst_change = delta;
        }
        csv += csv_row({t, partition_of(t), category_of(t), b.metric, num(b.score), num(a.score), num(delta),
                        route_text(b.route, rl), route_text(a.route, rl), ch ? "1" : "0"});
        rows.push_back({{"task", t}, {"metric", b.metric}, {"before", finite_or_null(b.score)},
                        {"after", finite_or_null(a.score)}, {"change", finite_or_null(delta)}, {"route_changed", ch}});
      }
      cf["ablate"] = {{"experts", names}, {"changed_tasks", changed.size()}, {"tasks", rows}};
      out.table("tables/ablation.csv", "Metric before and after ablating " + join(names, ", "), csv);
      std::string s = "Ablating " + join(names, ", ") + " changes the route of " + std::to_string(changed.size()) +
                      " of " + plural(cf_tasks.size(), "task", "tasks");
      if (cnt > 0)
        s += "; their metric changes by " + fmt(sum / static_cast<double>(cnt)) + " on average" +
             (worst_change < 0 ? " (largest drop: " + worst + ", " + fmt(worst_change) + ")" : " (no task loses)");
      sentences.push_back(s + ".");
    }

    if (o.attribution) {
      std::vector<std::string> names;
      std::vector<Scores> afters;
      std::vector<std::vector<std::string>> changed_sets;
      for (const auto& r : attribution) {
        names.push_back(expert_ref_name(r, rl.all));
        changed_sets.push_back(changed_by({r}));
        log << "analyze-routes: attribution: ablating " << names.back() << " (" << changed_sets.back().size()
            << " tasks change route)\n";
        afters.push_back(run_eval(o, changed_sets.back(), ablation_edit({r}), log, false));
      }
      std::vector<std::string> head = {"task", "partition", "category", "metric", "before"};
      for (const auto& nm : names) head.push_back("drop_" + nm);
      std::string csv = csv_row(head);
      ojson table = ojson::array();
      // drop[t][r] = before - after (positive: the expert helped the task)
      std::map<std::string, std::vector<double>> drops;
      for (const auto& t : cf_tasks) {
        const auto& b = before.at(t);
        std::vector<std::string> row = {t, partition_of(t), category_of(t), b.metric, num(b.score)};
        ojson dj = ojson::object();
        for (std::size_t r = 0; r < attribution.size(); ++r) {
          const double after = afters[r].count(t) ? afters[r].at(t).score : b.score;
          const double drop = b.score - after;
          drops[t].push_back(drop);
          row.push_back(num(drop));
          dj[names[r]] = finite_or_null(drop);
        }
        csv += csv_row(row);
        table.push_back({{"task", t}, {"metric", b.metric}, {"before", finite_or_null(b.score)}, {"drop", dj}});
      }
      out.table("tables/attribution.csv",
                "Skill attribution: metric drop (before - after) of each task when one expert is ablated", csv);
      // Mean drop per category, as bars: a panel per layer, a group per expert, a bar per category.
      std::vector<std::string> cats;
      for (const auto& t : cf_tasks)
        if (std::find(cats.begin(), cats.end(), category_of(t)) == cats.end()) cats.push_back(category_of(t));
      std::vector<std::string> layer_list;
      for (const auto& r : attribution) {
        const auto& ln = rl.all[static_cast<std::size_t>(r.layer)];
        if (std::find(layer_list.begin(), layer_list.end(), ln) == layer_list.end()) layer_list.push_back(ln);
      }
      GroupedBarSpec bars;
      for (std::int64_t e = 0; e < E; ++e) bars.groups.push_back(expert_name(static_cast<std::size_t>(e)));
      bars.series = cats;
      ojson by_cat = ojson::object();
      double best_drop = -std::numeric_limits<double>::infinity();
      std::string best_desc;
      for (const auto& ln : layer_list) {
        GroupedBarSpec::Panel p;
        p.title = ln;
        p.values.assign(cats.size() * static_cast<std::size_t>(E), 0.0);
        for (std::size_t r = 0; r < attribution.size(); ++r) {
          if (rl.all[static_cast<std::size_t>(attribution[r].layer)] != ln) continue;
          for (std::size_t c = 0; c < cats.size(); ++c) {
            double sum = 0;
            std::size_t cnt = 0;
            for (const auto& t : cf_tasks)
              if (category_of(t) == cats[c] && std::isfinite(drops[t][r])) sum += drops[t][r], ++cnt;
            const double mean = cnt ? sum / static_cast<double>(cnt) : NAN;
            p.values[c * static_cast<std::size_t>(E) + static_cast<std::size_t>(attribution[r].expert)] =
                std::isfinite(mean) ? mean : 0.0;
            by_cat[names[r]][cats[c]] = finite_or_null(mean);
            if (std::isfinite(mean) && mean > best_drop) {
              best_drop = mean;
              best_desc = names[r] + " (" + cats[c] + " tasks lose " + fmt(mean) + " on average)";
            }
          }
        }
        bars.panels.push_back(p);
      }
      bars.title = "Skill attribution: mean metric drop per category when one expert is ablated";
      bars.y_label = "metric drop";
      figure("attribution", "Mean metric drop per category when each expert is ablated",
             [&](const fs::path& p) { plot_grouped_bars(bars, p); });
      cf["attribution"] = {{"experts", names}, {"tasks", table}, {"mean_drop_by_category", by_cat}};
      std::string s = "Ablating each of " + plural(attribution.size(), "expert", "experts") + " in turn";
      s += best_desc.empty() ? " changes no score." : ", the largest mean drop of a category comes from " + best_desc + ".";
      sentences.push_back(s);
    }

    if (!force.empty()) {
      std::map<std::string, std::int64_t> source;
      for (const auto& [t, src] : force) source[t] = id_of.at(src);
      train::RouteEdit edit = [source, tau, seed](const std::string& task, model::TLMoEModelImpl& mm,
                                                  std::vector<model::LayerRoute> r) {
        auto it = source.find(task);
        if (it == source.end()) return r;
        return task_routes(mm, it->second, r.at(0).weights.size(0), r[0].weights.device(), tau, seed);
      };
      std::vector<std::string> forced;
      for (const auto& [t, _] : force) forced.push_back(t);
      log << "analyze-routes: forcing routes of " << join(forced, ", ") << "\n";
      const Scores after = run_eval(o, forced, edit, log, false);
      std::string csv = csv_row({"task", "route_of", "partition", "category", "metric", "before", "after", "change",
                                 "route_before", "route_after"});
      ojson rows = ojson::array();
      std::vector<std::string> parts;
      for (const auto& [t, src] : force) {
        const auto& b = before.at(t);
        const auto& a = after.at(t);
        const double delta = a.score - b.score;
        csv += csv_row({t, src, partition_of(t), category_of(t), b.metric, num(b.score), num(a.score), num(delta),
                        route_text(b.route, rl), route_text(a.route, rl)});
        rows.push_back({{"task", t}, {"route_of", src}, {"metric", b.metric}, {"before", finite_or_null(b.score)},
                        {"after", finite_or_null(a.score)}, {"change", finite_or_null(delta)}});
        parts.push_back(t + " on " + src + "'s route scores " + fmt(a.score) + " instead of " + fmt(b.score) + " (" +
                        b.metric + ")");
      }
      cf["force"] = rows;
      out.table("tables/force.csv", "Metric before and after forcing a task onto another task's route", csv);
      sentences.push_back("Forced routes: " + join(parts, "; ") + ".");
    }
    stats["counterfactuals"] = cf;
    cf_text = join(sentences, " ");
  }

  // ---- the summary paragraph, from the numbers ----
  std::string summary;
  {
    std::ostringstream s;
    s << "The checkpoint (step " << lm.step << ", tau " << fmt(lm.tau) << ") routes " << n << " tasks ("
      << count_part("seen") << " seen, " << count_part("dev") << " dev, " << count_part("unseen") << " unseen) through "
      << plural(rl.names.size(), "routed layer", "routed layers") << " of " << E << " experts.";
    if (have_categories) {
      const std::size_t Ls = hard_assoc.size();
      s << " Against " << labels.num_classes() << " categories (" << cat_rows.size() << " categorised tasks), ";
      if (significant.empty()) {
        std::size_t best = 0;
        for (std::size_t l = 0; l < Ls; ++l)
          if (layer_perm_p[l] < layer_perm_p[best]) best = l;
        s << "no layer's hard expert choice is significantly associated with the category at " << kAlpha
          << " (chi-square statistic, permutation p-values; smallest p = " << fmt_p(layer_perm_p[best]) << " in "
          << hard_assoc[best].layer << ").";
      } else {
        std::vector<std::string> sig;
        std::size_t best = significant[0];
        for (std::size_t l : significant) {
          sig.push_back(hard_assoc[l].layer);
          if (hard_assoc[l].chi2.cramers_v > hard_assoc[best].chi2.cramers_v) best = l;
        }
        const auto& b = hard_assoc[best].chi2;
        s << "the hard expert choice is significantly associated with the category at " << kAlpha << " in "
          << sig.size() << " of " << Ls << " layers (" << join(sig, ", ")
          << "; chi-square statistic, permutation p-values), most strongly in " << hard_assoc[best].layer
          << " (chi2 = " << fmt(b.statistic) << ", dof " << b.dof << ", permutation p = " << fmt_p(layer_perm_p[best])
          << ", Cramér's V = " << fmt(b.cramers_v, 2) << ").";
        const std::size_t bonf = stats["association"]["significant_layers_bonferroni"].get<std::size_t>();
        if (bonf != sig.size())
          s << " With a Bonferroni correction over the " << Ls << " layers, " << bonf << " remain.";
      }
      if (!lifts.empty()) {
        std::vector<std::string> parts;
        for (const auto& t : lifts)
          parts.push_back(t.category + " → " + t.layer + ":" + expert_name(t.expert) + " (lift " + fmt(t.lift, 2) +
                          ": " + fmt(t.count) + " of its " + fmt(t.row_total) + " tasks)");
        s << " The expert each category over-uses most, by lift" << (significant.empty() ? "" : " in the significant layers")
          << ": " << join(parts, "; ") << ".";
      }
      if (clusters.ok) {
        s << " Cutting an average-linkage tree of the tau = 1 route vectors into " << labels.num_classes()
          << " clusters recovers the categories with NMI = " << fmt(clusters.nmi, 2)
          << " and ARI = " << fmt(clusters.ari, 2)
          << (clusters.ari < 0.05 ? " (chance level)" : clusters.ari < 0.3 ? " (weak agreement)"
                                                     : clusters.ari < 0.6 ? " (moderate agreement)"
                                                                          : " (strong agreement)")
          << ".";
      }
      if (perm.ok) {
        s << " Tasks of the same category " << (perm.r.p_value < kAlpha ? "have" : "do not have")
          << " significantly more similar routes than tasks of different categories (mean distance between "
          << "route vectors " << fmt(-perm.r.mean_same) << " within vs " << fmt(-perm.r.mean_different)
          << " across categories, permutation p = "
          << fmt_p(perm.r.p_value) << ", " << perm.r.permutations << " permutations).";
      }
    } else {
      s << " No task categories were found (" << meta0.category_source << "), so only the routes are shown.";
    }
    if (!dynamics_text.empty()) s << " " << dynamics_text;
    if (!compare_text.empty()) s << " " << compare_text;
    if (!cf_text.empty()) s << " " << cf_text;
    summary = s.str();
  }
  stats["summary"] = summary;
  out.write("stats.json", stats.dump(1) + "\n");

  // ---- report.md ----
  {
    std::ostringstream r;
    r << "# Routing analysis of `" << o.checkpoint << "`\n\n" << summary << "\n\n";
    r << "Checkpoint step " << lm.step << ", routing temperature tau = " << fmt(lm.tau) << ", selection "
      << stats["selection"].get<std::string>() << "; categories: " << meta0.category_source << ". Statistics use "
      << "the categorised tasks: the hard choice (argmax) for the association tests, the tau = 1 route vectors "
      << "(softmax of the router's logits) for clustering, the permutation test and PCA. All numbers: "
      << "[stats.json](stats.json).\n\n";
    r << "## Figures\n\n";
    for (const auto& f : out.figures) {
      r << "### " << f.title << "\n\n![" << f.title << "](" << f.paths.front() << ")\n\n";
      if (f.paths.size() > 1) {
        r << "Also as";
        for (std::size_t i = 1; i < f.paths.size(); ++i) r << " [" << f.paths[i] << "](" << f.paths[i] << ")";
        r << ".\n\n";
      }
    }
    if (have_categories) {
      r << "## Expert–category association per layer\n\n";
      r << "| layer | chi2 | dof | permutation p | asymptotic p | Cramér's V | min expected | soft chi2 "
           "(descriptive) |\n";
      r << "|---|---|---|---|---|---|---|---|\n";
      for (std::size_t l = 0; l < hard_assoc.size(); ++l) {
        const auto& c = hard_assoc[l].chi2;
        r << "| " << hard_assoc[l].layer << " | " << fmt(c.statistic) << " | " << c.dof << " | "
          << fmt_p(layer_perm_p[l]) << (layer_perm_p[l] < kAlpha ? " *" : "") << " | " << fmt_p(c.p_value) << " | "
          << fmt(c.cramers_v, 2) << " | " << fmt(c.min_expected, 2) << " | " << fmt(soft_assoc[l].chi2.statistic)
          << " |\n";
      }
      r << "\nChi-square statistic of the hard choice x category table; `*`: permutation p < " << kAlpha << " ("
        << cfg.analysis.permutations << " shuffles of the category labels, seed " << cfg.analysis.seed
        << "). The asymptotic p-value is approximate when expected counts are below 5.\n\n";
      if (!lifts.empty()) {
        r << "The expert of largest lift per category ("
          << (significant.empty() ? "all layers" : "significant layers") << ", cells of at least 2 tasks):\n\n";
        r << "| category | layer:expert | lift | P(expert given category) | tasks |\n|---|---|---|---|---|\n";
        for (const auto& t : lifts)
          r << "| " << t.category << " | " << t.layer << ":" << expert_name(t.expert) << " | " << fmt(t.lift, 3)
            << " | " << fmt(t.p_given, 2) << " | " << fmt(t.count) << " / " << fmt(t.row_total) << " |\n";
        r << "\n";
      }
      r << "## Clustering and permutation test\n\n";
      if (clusters.ok)
        r << "- Average linkage (euclidean) on the tau = 1 route vectors, cut at k = " << labels.num_classes()
          << ": NMI = " << fmt(clusters.nmi) << ", ARI = " << fmt(clusters.ari) << "\n";
      if (perm.ok)
        r << "- Same-category permutation test: mean euclidean distance between tau = 1 route vectors "
          << fmt(-perm.r.mean_same) << " within categories, " << fmt(-perm.r.mean_different)
          << " across; statistic (difference of mean similarities) " << fmt(perm.r.observed)
          << ", p = " << fmt_p(perm.r.p_value)
          << " (" << perm.r.permutations << " permutations, seed " << cfg.analysis.seed << ")\n";
      if (stats.contains("by_partition"))
        for (auto it = stats["by_partition"].begin(); it != stats["by_partition"].end(); ++it) {
          const auto& v = it.value();
          r << "- " << it.key() << " tasks only (" << v["tasks"].get<std::size_t>() << "): ";
          if (v["clustering"].contains("nmi"))
            r << "NMI = " << fmt(v["clustering"]["nmi"].get<double>()) << ", ARI = "
              << fmt(v["clustering"]["ari"].get<double>());
          else
            r << "no clustering (" << v["clustering"]["skipped"].get<std::string>() << ")";
          if (v["permutation_test"].contains("p_value"))
            r << ", permutation p = " << fmt_p(v["permutation_test"]["p_value"].get<double>());
          r << "\n";
        }
      r << "\n";
    }
    if (stats.contains("compare")) {
      r << "## Comparison with `" << o.compare << "`\n\n| layer | matching | argmax agreement | unaligned | mean TV |\n"
        << "|---|---|---|---|---|\n";
      for (const auto& l : stats["compare"]["layers"])
        r << "| " << l["layer"].get<std::string>() << " | " << join(l["matching"].get<std::vector<std::string>>(), " ")
          << " | " << fmt(l["argmax_agreement"].get<double>()) << " | "
          << fmt(l["unaligned_argmax_agreement"].get<double>()) << " | " << fmt(l["mean_total_variation"].get<double>())
          << " |\n";
      r << "\n";
    }
    r << "## Tables\n\n";
    for (const auto& t : out.tables) r << "- [" << t.path << "](" << t.path << "): " << t.title << "\n";
    r << "- [routes.json](routes.json): the routes as JSON (tasks, layer_names, routes_t1, routes, hard, task_info)\n";
    r << "- [stats.json](stats.json): every statistic above\n";
    out.write("report.md", r.str());
  }

  AnalysisReport rep;
  rep.stats = stats;
  rep.summary = summary;
  rep.files = out.files;
  return rep;
}

}  // namespace tlmoe::analysis
