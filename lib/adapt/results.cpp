// Selecting on dev, summarising per task and writing results.csv and summary.json.
#include <cmath>
#include <sstream>

#include "adapt/sweep.h"
#include "common/strings.h"
#include "io/atomic_file.h"

using nlohmann::json;

namespace tlmoe::adapt::detail {

namespace {

// Per split the grid point with the best dev score (strict '>': the first in grid order wins
// ties; a NaN dev score loses to any number) is marked selected; returns its index.
size_t select_on_dev(std::vector<AdaptRow>& rows) {
  size_t best = 0;
  for (size_t i = 1; i < rows.size(); ++i)
    if (rows[i].dev > rows[best].dev || (std::isnan(rows[best].dev) && !std::isnan(rows[i].dev))) best = i;
  rows[best].selected = true;
  return best;
}

std::string results_csv(const std::vector<AdaptRow>& rows) {
  std::ostringstream csv;
  csv << "task,split,seed,lr,bsz,best_step,dev,test,selected\n";
  for (const auto& r : rows)
    csv << csv_field(r.task) << "," << csv_field(r.split) << "," << r.seed << "," << fmt(r.lr, "%g") << "," << r.batch_size << ","
        << r.best_step << "," << fmt(r.dev) << "," << fmt(r.test) << "," << (r.selected ? 1 : 0) << "\n";
  return csv.str();
}

}  // namespace

// Everything finished so far: rows in grid order, the selected point of every complete split,
// the task score (mean over its splits, std with ddof 0) of every complete task. Rank 0 writes.
void Sweep::write_outputs() {
  result_.rows.clear();
  json tasks = json::object();
  double sum = 0;
  int64_t n_tasks = 0;
  bool complete = true;
  json diverged = json::array();  // grid points whose loss became non-finite
  for (const auto& p : plans_) {
    json splits_j = json::object();
    std::vector<double> sel;
    for (const auto& s : p.splits) {
      std::vector<AdaptRow> rows;
      for (double lr : cfg_.adapt.lrs)
        for (int64_t bsz : cfg_.adapt.batch_sizes) {
          auto it = done_.find(point_key(p.name, s.prefix, lr, bsz));
          if (it == done_.end()) {
            complete = false;
            continue;
          }
          const json& j = it->second;
          if (j.contains("diverged_at") && j["diverged_at"].is_number_integer())
            diverged.push_back({{"task", p.name}, {"split", s.prefix}, {"lr", lr}, {"batch_size", bsz}, {"step", j["diverged_at"]}});
          rows.push_back({p.name, s.prefix, s.seed, lr, bsz, j.at("best_step").get<int64_t>(), from_num(j.at("dev")),
                          from_num(j.at("test")), false});
        }
      const bool split_done = rows.size() == cfg_.adapt.lrs.size() * cfg_.adapt.batch_sizes.size();
      if (split_done && !rows.empty()) {
        const AdaptRow& b = rows[select_on_dev(rows)];
        sel.push_back(b.test);
        splits_j[s.prefix] = {{"seed", s.seed}, {"test", num(b.test)}, {"dev", num(b.dev)},
                              {"lr", b.lr},     {"batch_size", b.batch_size}};
      }
      for (auto& r : rows) result_.rows.push_back(r);
    }
    if (sel.size() == p.splits.size()) {
      double m = 0;
      for (double v : sel) m += v;
      m /= static_cast<double>(sel.size());
      tasks[p.name] = {{"metric", p.metric}, {"mean", num(m)}, {"std", num(stdev(sel, m))},
                       {"splits", splits_j}, {"route", route_info_.value(p.name, json(nullptr))}};
      if (std::isfinite(m)) sum += m, ++n_tasks;
    }
  }
  result_.summary = {{"start", st_.kind},     {"checkpoint", opts_.checkpoint}, {"route", route_mode_}, {"routing_tau", st_.tau},
                     {"mode", routed_ ? cfg_.adapt.mode : "none"}, {"complete", complete}, {"tasks", tasks},
                     {"mean_over_tasks", n_tasks ? json(sum / static_cast<double>(n_tasks)) : json(nullptr)},
                     {"grid", {{"lrs", cfg_.adapt.lrs}, {"batch_sizes", cfg_.adapt.batch_sizes},
                               {"steps", cfg_.adapt.steps}, {"eval_every", cfg_.adapt.eval_every}}},
                     {"upstream_health", upstream_health_}};
  if (!non_finite_weights_.empty()) result_.summary["non_finite_weights"] = non_finite_weights_;
  if (!diverged.empty()) result_.summary["diverged_points"] = diverged;
  result_.complete = complete;
  if (!lead_) return;
  // both or neither: a full disk leaves the previous pair
  io::write_files_atomic({{out_ / "results.csv", results_csv(result_.rows)}, {out_ / "summary.json", result_.summary.dump(1) + "\n"}});
}

}  // namespace tlmoe::adapt::detail
