// Helpers shared by the stages of analyze-routes (analysis_run.h).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "analysis/analysis_run.h"
#include "common/error.h"
#include "common/strings.h"
#include "data/task_meta.h"
#include "io/atomic_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::analysis::detail {

namespace {

std::string suggest_task(const std::string& name, const std::vector<std::string>& tasks) {
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const auto& t : tasks) {
    const std::size_t d = edit_distance(name, t);
    if (d < best_d) best_d = d, best = t;
  }
  return best_d <= std::max<std::size_t>(2, name.size() / 3) ? " (did you mean '" + best + "'?)" : "";
}

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

// A uniform draw from [0, n) without modulo bias.
std::uint64_t bounded(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t v;
  do v = rng();
  while (v >= limit);
  return v % n;
}

}  // namespace

// ---- formatting ------------------------------------------------------------------------------

// The shortest text that reads back as exactly `v` (tables).
std::string num(double v) {
  if (std::isnan(v)) return "nan";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// `digits` significant digits (prose and Markdown tables).
std::string fmt(double v, int digits) {
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

// The eval-mode routes of every task of the table, in table order, routed layers only.
TaskRoutes compute_routes(model::LoadedModel& lm, const RoutedLayers& rl) {
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
    data::print_notes(onto.notes, log);
    std::vector<std::string> unlisted;
    for (std::size_t i = 0; i < n; ++i)
      if (onto.contains(tasks[i])) {
        meta.top[i] = onto.of(tasks[i]).top;
        meta.sub[i] = onto.of(tasks[i]).sub;
        ++from_ontology;
      } else {
        unlisted.push_back(tasks[i]);
      }
    if (!unlisted.empty()) {
      const std::size_t shown = std::min<std::size_t>(unlisted.size(), 5);
      log << "analyze-routes: warning: " << unlisted.size() << " of the checkpoint's tasks are not in "
          << onto_path.string() << " (" << join(std::vector<std::string>(unlisted.begin(), unlisted.begin() + shown), ", ")
          << (unlisted.size() > shown ? ", ..." : "") << "): their category comes from tasks.json, if it has one\n";
    }
    meta.not_in_ontology = unlisted;
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

void Output::write(const std::string& rel, const std::string& bytes) {
  io::write_file_atomic(dir / rel, bytes);
  files.push_back(rel);
}

void Output::table(const std::string& rel, const std::string& title, const std::string& bytes) {
  write(rel, bytes);
  tables.push_back({title, rel});
}

std::vector<std::string> figure_extensions(const std::string& formats) {
  if (formats == "png") return {".png"};
  if (formats == "svg") return {".svg"};
  return {".png", ".svg"};
}

// ---- counterfactual inputs -------------------------------------------------------------------

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

Scores run_eval(const AnalyzeOptions& o, const std::vector<std::string>& tasks, evaluate::RouteEdit edit,
                std::ostream& log, bool forward_log) {
  Scores out;
  if (tasks.empty()) return out;
  evaluate::CheckpointEvalOptions e;
  e.cfg = o.cfg;
  e.checkpoint = o.checkpoint;
  e.tasks = tasks;
  e.max_examples = o.max_examples;
  e.route_edit = std::move(edit);
  std::ostringstream quiet;
  e.log = forward_log ? &log : &quiet;
  const json s = evaluate::evaluate_checkpoint(e);
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

}  // namespace tlmoe::analysis::detail
