// The counterfactuals of analyze-routes (analysis_run.h): the metric of tasks decoded with edited
// routes, against their learned routes: experts ablated together, each expert ablated in turn
// (skill attribution), and tasks forced onto another task's route.
#include <algorithm>
#include <cmath>
#include <limits>

#include "analysis/analysis_run.h"
#include "analysis/plot.h"

namespace fs = std::filesystem;

namespace tlmoe::analysis::detail {

// What the counterfactual evaluations share.
struct CfContext {
  std::vector<std::string> cf_tasks;          // the tasks of --ablate / --attribution
  std::map<std::string, std::int64_t> id_of;  // task -> row of the task table
  double tau = 1;
  std::uint64_t seed = 0;
  torch::Tensor ids_all;                      // [n] every row of the task table
  std::vector<model::LayerRoute> base;        // their eval routes
  Scores before;                              // the scores with the learned routes
  ojson cf;                                   // stats.json "counterfactuals"
  std::vector<std::string> sentences;         // of the summary
};

std::string Analysis::category_of(const std::string& t) const { return shown_cat[row_of.at(t)]; }
std::string Analysis::partition_of(const std::string& t) const { return display_partition(partition[row_of.at(t)]); }

evaluate::RouteEdit Analysis::ablation_edit(const CfContext& c, std::vector<ExpertRef> refs) const {
  return [id_of = c.id_of, tau = c.tau, refs](const std::string& task, model::TLMoEModelImpl& mm,
                                              std::vector<model::LayerRoute> r) {
    const auto B = r.at(0).weights.size(0);
    auto ids = torch::full({B}, id_of.at(task), torch::TensorOptions().dtype(torch::kLong).device(r[0].weights.device()));
    return ablate_experts(mm, ids, std::move(r), refs, tau);
  };
}

// The tasks of cf_tasks whose eval route the ablation of `refs` changes (the others decode
// exactly as before: their score is the baseline's).
std::vector<std::string> Analysis::changed_by(const CfContext& c, const std::vector<ExpertRef>& refs) {
  torch::NoGradGuard g;
  auto ab = ablate_experts(m, c.ids_all, c.base, refs, c.tau);
  const auto changed = changed_rows(c.base, ab);
  std::vector<std::string> out_tasks;
  for (const auto& t : c.cf_tasks)
    if (changed[static_cast<std::size_t>(c.id_of.at(t))]) out_tasks.push_back(t);
  return out_tasks;
}

void Analysis::counterfactuals() {
  if (!counterfactual) return;
  CfContext c;
  c.cf_tasks = o.tasks;
  if (c.cf_tasks.empty() && (!ablate.empty() || o.attribution))
    for (std::size_t t = 0; t < n; ++t)
      if (!partition[t].empty()) c.cf_tasks.push_back(t1.tasks[t]);
  std::vector<std::string> before_tasks = c.cf_tasks;
  for (const auto& [t, _] : force)
    if (std::find(before_tasks.begin(), before_tasks.end(), t) == before_tasks.end()) before_tasks.push_back(t);
  for (std::size_t i = 0; i < n; ++i) c.id_of[lm.tasks[i]] = static_cast<std::int64_t>(i);
  c.tau = lm.tau;
  c.seed = static_cast<std::uint64_t>(lm.cfg.train.seed);
  c.ids_all = torch::arange(static_cast<std::int64_t>(n), torch::kLong);
  {
    torch::NoGradGuard g;
    c.base = eval_routes(m, c.ids_all, c.tau, c.seed);
  }
  log << "analyze-routes: counterfactuals: decoding " << before_tasks.size() << " tasks with the learned routes"
      << (o.max_examples > 0 ? " (first " + std::to_string(o.max_examples) + " test examples each)" : "") << "\n";
  c.before = run_eval(o, before_tasks, nullptr, log, true);
  c.cf = {{"max_examples", o.max_examples}, {"tasks", c.cf_tasks.size()}};
  if (!ablate.empty() && !o.attribution) cf_ablation(c);
  if (o.attribution) cf_attribution(c);
  if (!force.empty()) cf_force(c);
  stats["counterfactuals"] = c.cf;
  cf_text = join(c.sentences, " ");
}

// The experts of --ablate removed together.
void Analysis::cf_ablation(CfContext& c) {
  std::vector<std::string> names;
  for (const auto& r : ablate) names.push_back(expert_ref_name(r, rl.all));
  const auto changed = changed_by(c, ablate);
  log << "analyze-routes: ablating " << join(names, ", ") << ": " << changed.size() << " of " << c.cf_tasks.size()
      << " tasks change route\n";
  const Scores after = run_eval(o, changed, ablation_edit(c, ablate), log, false);
  std::string csv = csv_row({"task", "partition", "category", "metric", "before", "after", "change", "route_before",
                             "route_after", "route_changed"});
  ojson rows = ojson::array();
  double sum = 0;
  std::size_t cnt = 0;
  std::string worst;
  double worst_change = 0;
  for (const auto& t : c.cf_tasks) {
    const auto& b = c.before.at(t);
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
  c.cf["ablate"] = {{"experts", names}, {"changed_tasks", changed.size()}, {"tasks", rows}};
  out.table("tables/ablation.csv", "Metric before and after ablating " + join(names, ", "), csv);
  std::string s = "Ablating " + join(names, ", ") + " changes the route of " + std::to_string(changed.size()) +
                  " of " + plural(c.cf_tasks.size(), "task", "tasks");
  if (cnt > 0)
    s += "; their metric changes by " + fmt(sum / static_cast<double>(cnt)) + " on average" +
         (worst_change < 0 ? " (largest drop: " + worst + ", " + fmt(worst_change) + ")" : " (no task loses)");
  c.sentences.push_back(s + ".");
}

// Each expert of `attribution` removed in turn: the metric drop of every task, and its mean per
// category as bars.
void Analysis::cf_attribution(CfContext& c) {
  std::vector<std::string> names;
  std::vector<Scores> afters;
  std::vector<std::vector<std::string>> changed_sets;
  for (const auto& r : attribution) {
    names.push_back(expert_ref_name(r, rl.all));
    changed_sets.push_back(changed_by(c, {r}));
    log << "analyze-routes: attribution: ablating " << names.back() << " (" << changed_sets.back().size()
        << " tasks change route)\n";
    afters.push_back(run_eval(o, changed_sets.back(), ablation_edit(c, {r}), log, false));
  }
  std::vector<std::string> head = {"task", "partition", "category", "metric", "before"};
  for (const auto& nm : names) head.push_back("drop_" + nm);
  std::string csv = csv_row(head);
  ojson table = ojson::array();
  // drop[t][r] = before - after (positive: the expert helped the task)
  std::map<std::string, std::vector<double>> drops;
  for (const auto& t : c.cf_tasks) {
    const auto& b = c.before.at(t);
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
  for (const auto& t : c.cf_tasks)
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
      for (std::size_t ci = 0; ci < cats.size(); ++ci) {
        double sum = 0;
        std::size_t cnt = 0;
        for (const auto& t : c.cf_tasks)
          if (category_of(t) == cats[ci] && std::isfinite(drops[t][r])) sum += drops[t][r], ++cnt;
        const double mean = cnt ? sum / static_cast<double>(cnt) : NAN;
        p.values[ci * static_cast<std::size_t>(E) + static_cast<std::size_t>(attribution[r].expert)] =
            std::isfinite(mean) ? mean : 0.0;
        by_cat[names[r]][cats[ci]] = finite_or_null(mean);
        if (std::isfinite(mean) && mean > best_drop) {
          best_drop = mean;
          best_desc = names[r] + " (" + cats[ci] + " tasks lose " + fmt(mean) + " on average)";
        }
      }
    }
    bars.panels.push_back(p);
  }
  bars.title = "Skill attribution: mean metric drop per category when one expert is ablated";
  bars.y_label = "metric drop";
  figure("attribution", "Mean metric drop per category when each expert is ablated",
         [&](const fs::path& p) { plot_grouped_bars(bars, p); });
  c.cf["attribution"] = {{"experts", names}, {"tasks", table}, {"mean_drop_by_category", by_cat}};
  std::string s = "Ablating each of " + plural(attribution.size(), "expert", "experts") + " in turn";
  s += best_desc.empty() ? " changes no score." : ", the largest mean drop of a category comes from " + best_desc + ".";
  c.sentences.push_back(s);
}

// The tasks of --force decoded with another task's route.
void Analysis::cf_force(CfContext& c) {
  std::map<std::string, std::int64_t> source;
  for (const auto& [t, src] : force) source[t] = c.id_of.at(src);
  evaluate::RouteEdit edit = [source, tau = c.tau, seed = c.seed](const std::string& task, model::TLMoEModelImpl& mm,
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
    const auto& b = c.before.at(t);
    const auto& a = after.at(t);
    const double delta = a.score - b.score;
    csv += csv_row({t, src, partition_of(t), category_of(t), b.metric, num(b.score), num(a.score), num(delta),
                    route_text(b.route, rl), route_text(a.route, rl)});
    rows.push_back({{"task", t}, {"route_of", src}, {"metric", b.metric}, {"before", finite_or_null(b.score)},
                    {"after", finite_or_null(a.score)}, {"change", finite_or_null(delta)}});
    parts.push_back(t + " on " + src + "'s route scores " + fmt(a.score) + " instead of " + fmt(b.score) + " (" +
                    b.metric + ")");
  }
  c.cf["force"] = rows;
  out.table("tables/force.csv", "Metric before and after forcing a task onto another task's route", csv);
  c.sentences.push_back("Forced routes: " + join(parts, "; ") + ".");
}

}  // namespace tlmoe::analysis::detail
