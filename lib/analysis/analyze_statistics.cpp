// The statistics of analyze-routes (analysis_run.h): routes against task categories, route
// dynamics over training, and the comparison with a second run.
#include <algorithm>
#include <charconv>
#include <functional>
#include <cmath>
#include <numeric>

#include "analysis/analysis_run.h"
#include "analysis/plot.h"
#include "common/error.h"
#include "data/task_meta.h"

namespace fs = std::filesystem;

namespace tlmoe::analysis::detail {

// The categorised tasks and, with at least 2 categories, the association tests and clustering.
void Analysis::statistics() {
  for (std::size_t t = 0; t < n; ++t)
    if (!top[t].empty()) cat_rows.push_back(t);
  ct1 = select_tasks(t1, cat_rows);
  for (std::size_t t : cat_rows) cat_names.push_back(top[t]);
  labels = encode_labels(cat_names);
  stats["categories"] = labels.names;
  stats["categorised_tasks"] = cat_rows.size();
  have_categories = labels.num_classes() >= 2;
  if (!have_categories) {
    log << "analyze-routes: warning: fewer than 2 task categories (" << meta0.category_source
        << "): no association, clustering or permutation statistics\n";
    stats["association"] = {{"skipped", "fewer than 2 categories"}};
    return;
  }
  association_tests();
  clustering();
}

// Per layer: the chi-square test of the hard expert choice x category (permutation p-values),
// lift and PMI of every cell, the expert of largest lift per category, the expert usage figure.
void Analysis::association_tests() {
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
}

namespace {

// The entropy figure: per category the mean over its tasks with a band from the lowest to the
// highest task (one line per task is unreadable beyond a few tasks), plus a line for each task
// of `tasks` (--dynamics-tasks).
LineChartSpec entropy_chart(const RouteDynamics& d, const std::vector<std::size_t>& di,
                            const std::function<std::string(const std::string&)>& cat_of,
                            const std::vector<std::string>& tasks) {
  LineChartSpec ent;
  for (auto s : d.steps) ent.x.push_back(static_cast<double>(s));
  std::vector<std::string> cats;
  for (std::size_t i : di)
    if (std::find(cats.begin(), cats.end(), cat_of(d.tasks[i])) == cats.end()) cats.push_back(cat_of(d.tasks[i]));
  for (const auto& c : cats) {
    LineChartSpec::Series s;
    s.name = c + " (mean)";
    for (std::size_t k = 0; k < d.steps.size(); ++k) {
      double sum = 0, lo = INFINITY, hi = -INFINITY;
      std::size_t cnt = 0;
      for (std::size_t i : di)
        if (cat_of(d.tasks[i]) == c) {
          sum += d.entropy[k][i], ++cnt;
          lo = std::min(lo, d.entropy[k][i]), hi = std::max(hi, d.entropy[k][i]);
        }
      s.y.push_back(sum / static_cast<double>(cnt));
      s.lo.push_back(lo);
      s.hi.push_back(hi);
    }
    ent.series.push_back(std::move(s));
  }
  for (const auto& t : tasks) {
    auto it = std::find(d.tasks.begin(), d.tasks.end(), t);
    if (it == d.tasks.end()) continue;
    LineChartSpec::Series s;
    s.name = t + " (" + cat_of(t) + ")";
    for (std::size_t k = 0; k < d.steps.size(); ++k) s.y.push_back(d.entropy[k][static_cast<std::size_t>(it - d.tasks.begin())]);
    ent.series.push_back(std::move(s));
  }
  return ent;
}

}  // namespace

// Average-linkage clusters and the same-category permutation test on the tau = 1 route vectors,
// on all categorised tasks and on the seen and unseen tasks alone.
void Analysis::clustering() {
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

// Route entropy and route changes over the training snapshots of the checkpoint's run.
void Analysis::dynamics() {
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
    LineChartSpec ent = entropy_chart(d, di, cat_of, o.dynamics_tasks);
    const std::string which = key == "routes_t1" ? "tau = 1" : "the training tau";
    ent.title = "Route entropy (" + which + ") over training: category means, bands from the lowest to the highest task" +
                (o.dynamics_tasks.empty() ? std::string() : ", and the tasks asked for");
    ent.x_label = "step";
    ent.y_label = "entropy (nats, max " + fmt(std::log(static_cast<double>(E))) + ")";
    figure("dynamics_entropy", "Route entropy per task over training (" + which + ")",
           [&](const fs::path& p) { plot_lines(ent, p); });
    // Changes count against the previous snapshot: the first has nothing to compare with.
    LineChartSpec ch;
    ch.x.assign(ent.x.begin() + 1, ent.x.end());
    std::vector<std::string> cats;
    for (std::size_t i : di)
      if (std::find(cats.begin(), cats.end(), cat_of(d.tasks[i])) == cats.end()) cats.push_back(cat_of(d.tasks[i]));
    for (const auto& c : cats) {
      LineChartSpec::Series s;
      s.name = c;
      for (std::size_t k = 1; k < d.steps.size(); ++k) {
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

// Route agreement with the --compare run after aligning its experts to this one's.
void Analysis::compare_runs() {
  if (o.compare.empty()) return;
  model::LoadedModel lb = model::load_model(o.compare);
  model::use_evaluation_tau(lb, o.cfg);
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

}  // namespace tlmoe::analysis::detail
