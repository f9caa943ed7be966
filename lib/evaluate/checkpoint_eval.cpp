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
#include "metrics/health.h"
#include "evaluate/predict.h"
#include "train/upstream_data.h"
#include "common/device.h"
#include "model/hf_bart.h"
#include "model/hf_defaults.h"
#include "model/load_model.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::evaluate {

namespace {

// The test file of a task: its first k-shot split's test file; a seen task without k-shot files
// (data.upstream_source = full) is scored on its held-out {task}_full_dev.tsv.
const json& task_test_file(const Config& cfg, const json& man, const std::string& t) {
  const json* test = nullptr;
  for (const json& f : man.at("tasks").at(t).at("files"))
    if (f.at("kind") == "kshot" && f.at("split") == "test" &&
        (!test || f.at("prefix").get<std::string>() < test->at("prefix").get<std::string>()))
      test = &f;
  if (!test)
    for (const json& f : man.at("tasks").at(t).at("files"))
      if (f.at("kind") == "full" && f.at("split") == "dev") test = &f;
  if (!test)
    throw DataError(data::task_dir(cfg.data.dir, t).string(), 0,
                    "task '" + t + "' has neither a k-shot test file nor a {task}_full_dev.tsv");
  return *test;
}

std::vector<std::string> tasks_to_evaluate(const CheckpointEvalOptions& opts, const data::TaskSplits& splits) {
  std::vector<std::string> tasks = opts.tasks;
  if (tasks.empty())
    for (const auto& part : opts.partitions) {
      if (part != "train" && part != "dev" && part != "test")
        throw UsageError("eval: unknown partition '" + part + "' (train, dev or test)");
      const auto& list = part == "train" ? splits.train : part == "dev" ? splits.dev : splits.test;
      tasks.insert(tasks.end(), list.begin(), list.end());
    }
  if (tasks.empty()) throw DataError(splits.source, 0, "no tasks to evaluate");
  return tasks;
}

// JSON text that never throws: invalid UTF-8 (which a tokenizer should not produce, but a
// damaged file might) becomes U+FFFD instead of losing the file.
std::string safe_dump(const json& j, int indent = -1) { return j.dump(indent, ' ', false, json::error_handler_t::replace); }

struct Session {
  Config cfg;
  json man;
  data::TaskSplits splits;
  data::TaskTable tasks;  // tasks.json, read once: metrics and zero-shot answerability
  std::map<std::string, std::string> metrics;
  std::unique_ptr<text::Tokenizer> tok;
  model::LoadedModel lm;
  torch::Device dev = torch::kCPU;
  bool routed = false;
  model::GenerationOptions gen;
  RouteFn base_routes;
};

Session open_session(const CheckpointEvalOptions& opts, std::ostream& log) {
  Session s;
  s.cfg = opts.cfg;
  model::adopt_checkpoint_defaults(s.cfg, opts.checkpoint, log);
  validate(s.cfg);
  std::ostringstream quiet;
  data::preprocess(s.cfg, quiet);
  s.man = data::read_preprocess_manifest(s.cfg);
  s.tasks = data::load_tasks(s.man.at("tasks_file").get<std::string>());
  for (const auto& name : s.tasks.names()) s.metrics[name] = s.tasks.info(name).metric;
  s.splits = data::load_splits(s.man.at("splits").get<std::string>());
  const json& tok_info = s.man.at("tokenizer");
  s.tok = data::load_tokenizer(s.cfg);
  s.lm = model::load_model(opts.checkpoint);
  if (const auto w = model::non_finite_warning(s.lm, opts.checkpoint); !w.empty()) log << "warning: " << w << "\n";
  model::use_evaluation_tau(s.lm, s.cfg);
  if (s.lm.tokenizer_fingerprint != tok_info.at("fingerprint").get<std::string>())
    throw DataError(model::hf_dir_of(opts.checkpoint).empty() ? (fs::path(opts.checkpoint) / "meta.json").string() : opts.checkpoint, 0,
                    "the checkpoint was trained with another tokenizer than the preprocess cache records");
  s.dev = pick_device(s.cfg.device);
  s.lm.model->to(s.dev);
  s.lm.model->eval();
  s.routed = s.lm.model->options().experts > 1;
  if (s.routed && s.lm.cfg.task_rep.kind == "learned")
    log << "warning: the checkpoint's task table is learned: tasks it never trained on have random rows, so "
           "their zero-shot routes are arbitrary (use task_rep.kind textemb or fisher for zero-shot)\n";
  s.gen = generation_options(s.cfg, tok_info.at("bos_id"), tok_info.at("eos_id"), tok_info.at("pad_id"));
  s.gen.decoder_start_id = s.lm.cfg.model.decoder_start == "eos" ? tok_info.at("eos_id").get<int64_t>()
                                                                  : tok_info.at("bos_id").get<int64_t>();
  Config shown = s.cfg;
  shown.model.decoder_start = s.lm.cfg.model.decoder_start;
  log << "eval: decoding with " << model::describe_generation(shown) << "\n";
  s.base_routes = model_routes(s.lm.model, s.lm.tau, static_cast<uint64_t>(s.lm.cfg.train.seed));
  return s;
}

// The row of task `t` in the checkpoint's task table; a model without routing (and without a
// table, as a Hugging Face directory) decodes every task alike.
int64_t task_row(const Session& s, const CheckpointEvalOptions& opts, const std::string& t) {
  if (!s.man.at("tasks").contains(t)) throw UsageError("eval: task '" + t + "' is not in " + s.splits.source);
  auto it = std::find(s.lm.tasks.begin(), s.lm.tasks.end(), t);
  if (it != s.lm.tasks.end()) return it - s.lm.tasks.begin();
  if (!s.routed) return 0;
  throw UsageError("eval: task '" + t + "' is not in the checkpoint's task table (" + opts.checkpoint + ")");
}

// One task's summary entry; its predictions file (JSON lines) goes to `lines`.
json evaluate_task(Session& s, const CheckpointEvalOptions& opts, const std::string& t, std::string& lines, std::ostream& log) {
  const int64_t id = task_row(s, opts, t);
  auto mit = s.metrics.find(t);
  if (mit == s.metrics.end()) throw DataError(s.man.at("tasks_file").get<std::string>(), 0, "no metric for task '" + t + "'");
  EvalSet set = load_eval_set(cache_dir(s.cfg), task_test_file(s.cfg, s.man, t), t, id, mit->second,
                              s.man.at("tokenizer").at("vocab_size").get<int64_t>(), opts.max_examples);
  RouteFn routes = s.base_routes;
  if (opts.route_edit) {
    auto m = s.lm.model;
    RouteFn base = s.base_routes;
    routes = [&opts, t, m, base](const torch::Tensor& ids) mutable { return opts.route_edit(t, *m, base(ids)); };
  }
  auto preds = predict(*s.lm.model, set.examples, routes, *s.tok, s.gen, s.cfg.eval.batch_size, s.dev);
  TaskScore sc = score_predictions(set, preds, metric_options(s.cfg));
  const json score = std::isfinite(sc.score) ? json(sc.score) : json(nullptr);
  json entry = {{"metric", sc.metric}, {"mean", score}, {"std", 0.0},
                {"splits", {{"test", {{"seed", 0}, {"test", score}}}}},
                {"partition", s.splits.partition_of(t)}, {"examples", sc.examples},
                {"unparsable", sc.unparsable}, {"source", set.source}};
  if (s.routed) {
    auto r = routes(torch::tensor({id}, torch::kLong).to(s.dev));
    std::vector<int64_t> hard;
    for (auto& l : r) hard.push_back(l.weights.argmax(1).item<int64_t>());
    entry["route"] = hard;
  }
  log << "eval: " << t << " (" << s.splits.partition_of(t) << ") " << sc.metric << " " << sc.score << "\n";
  for (size_t i = 0; i < preds.size(); ++i) lines += safe_dump(json{{"prediction", preds[i]}, {"golds", set.golds[i]}}) + "\n";
  return entry;
}

}  // namespace

json evaluate_checkpoint(const CheckpointEvalOptions& opts) {
  std::ostream& log = opts.log ? *opts.log : std::cerr;
  validate(opts.cfg);
  if (opts.checkpoint.empty()) throw UsageError("eval: a checkpoint is required (--checkpoint)");
  Session s = open_session(opts, log);
  const std::vector<std::string> tasks = tasks_to_evaluate(opts, s.splits);
  for (const auto& t : tasks) task_row(s, opts, t);  // every task known before anything is decoded or written
  json summary = {{"kind", "eval"}, {"checkpoint", opts.checkpoint}, {"start", s.routed ? "tlmoe" : "vanilla"},
                  {"complete", false}, {"tasks", json::object()}, {"mean_over_tasks", nullptr},
                  {"generation", model::describe_generation(s.cfg)}, {"routing_tau", s.lm.tau},
                  {"upstream_health", metrics::report_upstream_health(opts.checkpoint, log)}};
  if (!s.lm.non_finite.empty()) summary["non_finite_weights"] = s.lm.non_finite;
  const auto answerable = data::zero_shot_answerable(s.tasks, s.splits, s.cfg.data.instruction);
  json answerable_here = json::object();
  for (const auto& t : tasks)
    if (answerable.count(t)) answerable_here[t] = answerable.at(t);
  if (!answerable_here.empty()) summary["zero_shot_answerable"] = answerable_here;
  double sum = 0, sum_answerable = 0;
  int64_t n = 0, n_answerable = 0;
  // summary.json with a finished task's predictions file, both or neither (a full disk leaves the
  // folder as it was after the previous task)
  auto write = [&](const std::string& task, const std::string& lines) {
    summary["mean_over_tasks"] = n ? json(sum / static_cast<double>(n)) : json(nullptr);
    if (!answerable_here.empty())
      summary["mean_over_answerable"] = n_answerable ? json(sum_answerable / static_cast<double>(n_answerable)) : json(nullptr);
    if (opts.out_dir.empty()) return;
    std::vector<std::pair<fs::path, std::string>> files;  // summary.json renamed last
    if (!task.empty()) files.emplace_back(fs::path(opts.out_dir) / "predictions" / (task + ".jsonl"), lines);
    files.emplace_back(fs::path(opts.out_dir) / "summary.json", safe_dump(summary, 1) + "\n");
    io::write_files_atomic(files);
  };
  for (const auto& t : tasks) {
    // Each finished task is in summary.json at once: a later failure loses nothing finished.
    std::string lines;
    json entry = evaluate_task(s, opts, t, lines, log);
    if (entry.at("mean").is_number()) {
      sum += entry.at("mean").get<double>(), ++n;
      if (answerable.count(t)) sum_answerable += entry.at("mean").get<double>(), ++n_answerable;
    }
    summary["tasks"][t] = std::move(entry);
    write(t, lines);
  }
  summary["complete"] = true;
  write("", "");
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
    char score[32];
    std::snprintf(score, sizeof score, "%8.4f", v);
    std::snprintf(line, sizeof line, "%-28s %-9s %-20s %8s %8lld\n", it.key().c_str(),
                  t.value("partition", "").c_str(), t.at("metric").get<std::string>().c_str(),
                  std::isfinite(v) ? score : "n/a",
                  static_cast<long long>(t.value("examples", int64_t{0})));
    s << line;
  }
  const json& m = summary.at("mean_over_tasks");
  s << "mean over tasks: " << (m.is_number() ? std::to_string(m.get<double>()) : std::string("n/a")) << "\n";
  if (summary.contains("zero_shot_answerable")) {
    const json& a = summary.at("zero_shot_answerable");
    const json& ma = summary.value("mean_over_answerable", json(nullptr));
    s << "mean over the " << a.size() << " zero-shot-answerable tasks (every label seen upstream or named in the instruction): "
      << (ma.is_number() ? std::to_string(ma.get<double>()) : std::string("n/a")) << "\n  ";
    for (auto it = a.begin(); it != a.end(); ++it)
      s << (it == a.begin() ? "" : ", ") << it.key() << " (" << it.value().get<std::string>() << ")";
    s << "\n";
  }
  return s.str();
}

}  // namespace tlmoe::evaluate
