#include "evaluate/checkpoint_eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "common/error.h"
#include "data/layout.h"
#include "data/preprocess.h"
#include "data/task_meta.h"
#include "io/atomic_file.h"
#include "evaluate/predict.h"
#include "train/upstream_data.h"
#include "common/device.h"
#include "model/load_model.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::evaluate {

json evaluate_checkpoint(const CheckpointEvalOptions& opts) {
  std::ostream& log = opts.log ? *opts.log : std::cerr;
  const Config& cfg = opts.cfg;
  validate(cfg);
  if (opts.checkpoint.empty()) throw UsageError("eval: a checkpoint is required (--checkpoint)");
  std::ostringstream quiet;
  data::preprocess(cfg, quiet);
  const json man = data::read_preprocess_manifest(cfg);
  const fs::path cache = cache_dir(cfg);
  const auto metrics = data::task_metrics(man.at("tasks_file").get<std::string>());
  const data::TaskSplits splits = data::load_splits(man.at("splits").get<std::string>());
  const json& tok_info = man.at("tokenizer");
  auto tok = data::load_tokenizer(cfg);

  model::LoadedModel lm = model::load_model(opts.checkpoint);
  if (lm.tokenizer_fingerprint != tok_info.at("fingerprint").get<std::string>())
    throw DataError((fs::path(opts.checkpoint) / "meta.json").string(), 0,
                    "the checkpoint was trained with another tokenizer than the preprocess cache records");
  const torch::Device dev = pick_device(cfg.device);
  lm.model->to(dev);
  lm.model->eval();
  const bool routed = lm.model->options().experts > 1;
  if (routed && lm.cfg.task_rep.kind == "learned")
    log << "warning: the checkpoint's task table is learned: tasks it never trained on have random rows, so "
           "their zero-shot routes are arbitrary (use task_rep.kind textemb or fisher for zero-shot)\n";

  std::vector<std::string> tasks = opts.tasks;
  if (tasks.empty())
    for (const auto& part : opts.partitions) {
      const auto& list = part == "train" ? splits.train : part == "dev" ? splits.dev : splits.test;
      if (part != "train" && part != "dev" && part != "test")
        throw UsageError("eval: unknown partition '" + part + "' (train, dev or test)");
      tasks.insert(tasks.end(), list.begin(), list.end());
    }
  if (tasks.empty()) throw DataError(splits.source, 0, "no tasks to evaluate");

  auto g = generation_options(cfg, tok_info.at("bos_id"), tok_info.at("eos_id"), tok_info.at("pad_id"));
  g.decoder_start_id = lm.cfg.model.decoder_start == "eos" ? tok_info.at("eos_id").get<int64_t>()
                                                            : tok_info.at("bos_id").get<int64_t>();
  const auto mo = metric_options(cfg);
  const RouteFn base_routes = model_routes(lm.model, lm.tau, static_cast<uint64_t>(lm.cfg.train.seed));

  json out_tasks = json::object();
  double sum = 0;
  int64_t n = 0;
  for (const auto& t : tasks) {
    auto id_it = std::find(lm.tasks.begin(), lm.tasks.end(), t);
    if (id_it == lm.tasks.end())
      throw UsageError("eval: task '" + t + "' is not in the checkpoint's task table (" + opts.checkpoint + ")");
    if (!man.at("tasks").contains(t)) throw UsageError("eval: task '" + t + "' is not in " + splits.source);
    const int64_t id = id_it - lm.tasks.begin();
    const json* test = nullptr;
    for (const json& f : man.at("tasks").at(t).at("files"))
      if (f.at("kind") == "kshot" && f.at("split") == "test" &&
          (!test || f.at("prefix").get<std::string>() < test->at("prefix").get<std::string>()))
        test = &f;
    // A seen task without k-shot files (data.upstream_source = full) is scored on its held-out
    // {task}_full_dev.tsv.
    if (!test)
      for (const json& f : man.at("tasks").at(t).at("files"))
        if (f.at("kind") == "full" && f.at("split") == "dev") test = &f;
    if (!test)
      throw DataError(data::task_dir(cfg.data.dir, t).string(), 0,
                      "task '" + t + "' has neither a k-shot test file nor a {task}_full_dev.tsv");
    auto mit = metrics.find(t);
    if (mit == metrics.end()) throw DataError(man.at("tasks_file").get<std::string>(), 0, "no metric for task '" + t + "'");
    EvalSet set = load_eval_set(cache, *test, t, id, mit->second, opts.max_examples);
    RouteFn routes = base_routes;
    if (opts.route_edit) {
      auto m = lm.model;
      routes = [&, m](const torch::Tensor& ids) mutable { return opts.route_edit(t, *m, base_routes(ids)); };
    }
    auto preds = predict(*lm.model, set.examples, routes, *tok, g, cfg.eval.batch_size, dev);
    TaskScore sc = score_predictions(set, preds, mo);
    json entry = {{"metric", sc.metric},
                  {"mean", std::isfinite(sc.score) ? json(sc.score) : json(nullptr)},
                  {"std", 0.0},
                  {"splits", {{"test", {{"seed", 0}, {"test", std::isfinite(sc.score) ? json(sc.score) : json(nullptr)}}}}},
                  {"partition", splits.partition_of(t)},
                  {"examples", sc.examples},
                  {"unparsable", sc.unparsable},
                  {"source", set.source}};
    if (routed) {
      auto r = routes(torch::tensor({id}, torch::kLong).to(dev));
      std::vector<int64_t> hard;
      for (auto& l : r) hard.push_back(l.weights.argmax(1).item<int64_t>());
      entry["route"] = hard;
    }
    out_tasks[t] = entry;
    if (std::isfinite(sc.score)) sum += sc.score, ++n;
    log << "eval: " << t << " (" << splits.partition_of(t) << ") " << sc.metric << " " << sc.score << "\n";
    if (!opts.out_dir.empty()) {
      std::string lines;
      for (size_t i = 0; i < preds.size(); ++i)
        lines += json{{"prediction", preds[i]}, {"golds", set.golds[i]}}.dump() + "\n";
      io::write_file_atomic(fs::path(opts.out_dir) / "predictions" / (t + ".jsonl"), lines);
    }
  }
  json summary = {{"kind", "eval"},
                  {"checkpoint", opts.checkpoint},
                  {"start", routed ? "tlmoe" : "vanilla"},
                  {"complete", true},
                  {"tasks", out_tasks},
                  {"mean_over_tasks", n ? json(sum / static_cast<double>(n)) : json(nullptr)}};
  if (!opts.out_dir.empty()) io::write_file_atomic(fs::path(opts.out_dir) / "summary.json", summary.dump(1) + "\n");
  return summary;
}

std::string format_eval_summary(const json& summary) {
  std::ostringstream s;
  char line[256];
  std::snprintf(line, sizeof line, "%-28s %-9s %-20s %8s %8s\n", "task", "partition", "metric", "score", "examples");
  s << line;
  for (auto it = summary.at("tasks").begin(); it != summary.at("tasks").end(); ++it) {
    const json& t = it.value();
    const double v = t.at("mean").is_number() ? t.at("mean").get<double>() : NAN;
    std::snprintf(line, sizeof line, "%-28s %-9s %-20s %8.4f %8lld\n", it.key().c_str(),
                  t.value("partition", "").c_str(), t.at("metric").get<std::string>().c_str(), v,
                  static_cast<long long>(t.value("examples", int64_t{0})));
    s << line;
  }
  const json& m = summary.at("mean_over_tasks");
  s << "mean over tasks: " << (m.is_number() ? std::to_string(m.get<double>()) : std::string("nan")) << "\n";
  return s.str();
}

}  // namespace tlmoe::evaluate
