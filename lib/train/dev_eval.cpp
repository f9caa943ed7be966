#include "train/dev_eval.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "common/error.h"
#include "data/preprocess.h"
#include "data/task_meta.h"
#include "evaluate/predict.h"
#include "metrics/spread.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::train {

namespace {

// argmax over experts of [n,L,E] as nested lists [n][L].
std::vector<std::vector<int64_t>> hard_list(const torch::Tensor& w) {
  auto a = w.argmax(-1).cpu().contiguous();
  std::vector<std::vector<int64_t>> v(a.size(0));
  auto acc = a.accessor<int64_t, 2>();
  for (int64_t t = 0; t < a.size(0); ++t)
    for (int64_t l = 0; l < a.size(1); ++l) v[t].push_back(acc[t][l]);
  return v;
}

}  // namespace

data::Batch to_device(data::Batch b, const torch::Device& d) {
  if (d.is_cpu()) return b;
  b.input_ids = b.input_ids.to(d);
  b.input_mask = b.input_mask.to(d);
  b.decoder_input_ids = b.decoder_input_ids.to(d);
  b.target_ids = b.target_ids.to(d);
  b.task_ids = b.task_ids.to(d);
  return b;
}

// Teacher-forced loss per target token over evaluation batches (no dropout, deterministic routes).
// With several ranks, rank r takes batches r, r + W, ... and the sums are all-reduced.
DevLoss eval_loss(model::TLMoEModel& m, const std::vector<data::Batch>& batches, const LossOptions& lo, double tau,
                  const torch::Device& dev, dist::Communicator& comm, int64_t num_tasks) {
  DevLoss out;
  out.per_task.assign(static_cast<size_t>(num_tasks), NAN);
  if (batches.empty()) return out;
  torch::NoGradGuard g;
  m->eval();
  // sums[t] = (nll, tokens) of task t; the last row is the total
  auto sums = torch::zeros({num_tasks + 1, 2}, torch::kDouble);
  auto acc = sums.accessor<double, 2>();
  LossOptions sum = lo;
  sum.reduction = "sum";
  for (size_t i = static_cast<size_t>(comm.rank()); i < batches.size(); i += static_cast<size_t>(comm.size())) {
    data::Batch b = to_device(batches[i], dev);
    model::RouteContext ctx;
    ctx.training = false;
    ctx.tau = tau;
    auto logits = m->forward(b.input_ids, b.input_mask, b.decoder_input_ids, m->routes(b.task_ids, ctx));
    auto r = label_smoothed_nll(logits, b.target_ids, sum);
    acc[num_tasks][0] += r.loss.item<double>();
    acc[num_tasks][1] += static_cast<double>(r.tokens);
    const auto ids = b.task_ids.cpu().contiguous();
    const std::set<int64_t> present(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    for (int64_t t : present) {
      if (t < 0 || t >= num_tasks) continue;
      const auto rows = ids.eq(t).nonzero().squeeze(1).to(logits.device());
      auto rt = label_smoothed_nll(logits.index_select(0, rows), b.target_ids.index_select(0, rows), sum);
      acc[t][0] += rt.loss.item<double>();
      acc[t][1] += static_cast<double>(rt.tokens);
    }
  }
  m->train();
  if (comm.size() > 1) {
    std::vector<torch::Tensor> all = {sums};
    comm.all_reduce_sum(all);
    sums = all[0];
    acc = sums.accessor<double, 2>();
  }
  for (int64_t t = 0; t <= num_tasks; ++t) {
    const double v = acc[t][1] > 0 ? acc[t][0] / acc[t][1] : NAN;
    if (t == num_tasks) out.mean = v;
    else out.per_task[static_cast<size_t>(t)] = v;
  }
  return out;
}

// Routes of every task at the current temperature and at tau = 1, as data (docs/method.md §12).
json routes_json(model::TLMoEModel& m, const std::vector<std::string>& tasks, double tau, int64_t step) {
  torch::NoGradGuard g;
  json j;
  j["step"] = step;
  j["tau"] = tau;
  j["tasks"] = tasks;
  j["layers"] = m->num_layers();
  j["encoder_layers"] = m->options().encoder_layers;
  j["experts"] = m->options().experts;
  auto ids = torch::arange(static_cast<int64_t>(tasks.size()), torch::kLong).to(m->final_logits_bias.device());
  auto to_list = [](const torch::Tensor& w /*[n,L,E]*/) {
    auto c = w.to(torch::kDouble).cpu().contiguous();
    std::vector<std::vector<std::vector<double>>> v(c.size(0));
    auto a = c.accessor<double, 3>();
    for (int64_t t = 0; t < c.size(0); ++t) {
      v[t].resize(c.size(1));
      for (int64_t l = 0; l < c.size(1); ++l)
        for (int64_t e = 0; e < c.size(2); ++e) v[t][l].push_back(a[t][l][e]);
    }
    return v;
  };
  if (m->has_router()) {
    auto logits = m->router_logits(ids).permute({1, 0, 2});  // [n,L,E]
    j["kind"] = "router";
    j["routes"] = to_list(torch::softmax(logits / tau, -1));
    j["routes_t1"] = to_list(torch::softmax(logits, -1));
    j["hard"] = hard_list(logits);
  } else {
    model::RouteContext ctx;
    ctx.gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(m->policy().seed));
    auto w = m->route_weights(ids, ctx).weights.permute({1, 0, 2});
    j["kind"] = m->policy().baseline;
    j["routes"] = to_list(w);
    j["hard"] = hard_list(w);
  }
  return j;
}

// The dev files the generation-based score decodes (docs/method.md §6.7, §13.9): per upstream task its
// {task}_full_dev.tsv (data.upstream_source = full; without one, the held-out tail of its full train
// file) or its first k-shot split's dev file.
std::vector<evaluate::EvalSet> upstream_dev_sets(const Config& cfg, const UpstreamData& data) {
  const json man = data::read_preprocess_manifest(cfg);
  const auto metrics = data::task_metrics(man.at("tasks_file").get<std::string>());
  const fs::path cache = cache_dir(cfg);
  std::vector<evaluate::EvalSet> sets;
  for (const auto& task : data.upstream) {
    const int64_t id = std::lower_bound(data.task_names.begin(), data.task_names.end(), task) - data.task_names.begin();
    const auto held = data.held_out.find(task);  // no full dev file: the held-out tail of the full train file
    const std::string split = held != data.held_out.end() ? "train" : "dev";
    const json* pick = nullptr;
    for (const json& f : man.at("tasks").at(task).at("files")) {
      if (f.at("split") != split) continue;
      const bool full = f.at("kind") == "full";
      if (cfg.data.upstream_source == "full" ? full : !full) {
        if (!pick || (!full && f.value("prefix", "") < pick->value("prefix", ""))) pick = &f;
      }
    }
    if (!pick) continue;  // load_upstream_data already insists on train files; a task without dev is skipped
    auto it = metrics.find(task);
    if (it == metrics.end()) throw DataError(man.at("tasks_file").get<std::string>(), 0, "no metric for task '" + task + "'");
    int64_t first = 0;
    if (held != data.held_out.end()) first = held->second.first;
    sets.push_back(evaluate::load_eval_set(cache, *pick, task, id, it->second, data.vocab_size, cfg.train.eval_max_examples, first));
  }
  return sets;
}

// Mean over the dev tasks of their metric (NaN scores count as 0 and are counted). With several
// ranks, rank r decodes tasks r, r + W, ... and the per-task scores are all-reduced.
DevScore dev_score(model::TLMoEModel& m, const std::vector<evaluate::EvalSet>& sets, const text::Tokenizer& tok,
                   const Config& cfg, const UpstreamData& data, double tau, const torch::Device& dev,
                   dist::Communicator& comm) {
  DevScore d;
  if (sets.empty()) return d;
  const auto g = evaluate::generation_options(cfg, data.bos_id, data.eos_id, data.pad_id);
  const auto mo = evaluate::metric_options(cfg);
  const evaluate::RouteFn routes = evaluate::model_routes(m, tau, static_cast<uint64_t>(cfg.train.seed));
  const int64_t n = static_cast<int64_t>(sets.size());
  // rows: score (0 when NaN), 1 when finite, top share, distinct, gold top share, collapsed, examples
  auto rows = torch::zeros({7, n}, torch::kDouble);
  std::map<int64_t, std::string> top;
  for (int64_t i = comm.rank(); i < n; i += comm.size()) {
    auto preds = evaluate::predict(*m, sets[i].examples, routes, tok, g, cfg.eval.batch_size, dev);
    auto sc = evaluate::score_predictions(sets[i], preds, mo);
    if (std::isfinite(sc.score)) rows[0][i] = sc.score, rows[1][i] = 1.0;
    const auto sp = metrics::prediction_spread(preds, sets[i].golds, cfg.train.collapse_threshold);
    rows[2][i] = sp.top_share, rows[3][i] = static_cast<double>(sp.distinct), rows[4][i] = sp.gold_top_share;
    rows[5][i] = sp.collapsed ? 1.0 : 0.0, rows[6][i] = static_cast<double>(sp.examples);
    top[i] = sp.top_prediction;
  }
  if (comm.size() > 1) {
    std::vector<torch::Tensor> v = {rows};
    comm.all_reduce_sum(v);
  }
  double sum = 0, top_sum = 0;
  auto a = rows.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const bool finite = a[1][i] > 0.5;
    if (finite) sum += a[0][i];
    else ++d.nan_tasks;
    d.per_task[sets[i].task] = finite ? json(a[0][i]) : json(nullptr);
    json sp = {{"top_share", a[2][i]}, {"distinct", std::llround(a[3][i])}, {"gold_top_share", a[4][i]},
               {"collapsed", a[5][i] > 0.5}, {"examples", std::llround(a[6][i])}};
    if (top.count(i)) sp["top"] = top[i];
    d.spread[sets[i].task] = sp;
    if (a[5][i] > 0.5) d.collapsed.push_back(sets[i].task);
    top_sum += a[2][i];
  }
  std::sort(d.collapsed.begin(), d.collapsed.end());
  m->train();
  d.mean = sum / static_cast<double>(sets.size());
  d.mean_top_share = top_sum / static_cast<double>(sets.size());
  return d;
}

}  // namespace tlmoe::train
