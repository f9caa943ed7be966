// tlmoe eval --config C --checkpoint CK [--tasks a,b | --partition test,train] [--out D]
// tlmoe eval compare RUN_A RUN_B [--json F] [--near-zero X] [--permutations N] [--seed S]
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "common/error.h"
#include "eval/compare.h"
#include "io/atomic_file.h"
#include "train/eval_tasks.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::app {

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) v.push_back(item);
  return v;
}

// summary.json of `tlmoe adapt` or `tlmoe eval` (a run directory or the file itself).
eval::ScoreTable read_scores(const std::string& run) {
  fs::path p = run;
  if (fs::is_directory(p)) p /= "summary.json";
  std::ifstream f(p);
  if (!f) throw DataError(p.string(), 0, "cannot read a summary (expected the --out folder of tlmoe adapt or eval)");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    throw DataError(p.string(), 0, std::string("damaged summary: ") + e.what());
  }
  if (!j.contains("tasks") || !j["tasks"].is_object())
    throw DataError(p.string(), 0, "not a tlmoe summary: no \"tasks\" object");
  if (!j.value("complete", true))
    std::cerr << "warning: " << p.string() << " is an incomplete sweep; only its finished splits are compared\n";
  eval::ScoreTable t;
  for (auto it = j["tasks"].begin(); it != j["tasks"].end(); ++it) {
    const json& splits = it.value().at("splits");
    for (auto s = splits.begin(); s != splits.end(); ++s) {
      const json& v = s.value();
      if (!v.contains("seed") || !v.contains("test"))
        throw DataError(p.string(), 0, "task '" + it.key() + "' split '" + s.key() + "' lacks seed or test");
      t[it.key()][v["seed"].get<int64_t>()] = v["test"].is_number() ? v["test"].get<double>() : NAN;
    }
  }
  return t;
}

}  // namespace

void setup_eval(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string checkpoint, tasks, partitions = "test", out;
    int64_t max_examples = 0;
    std::string run_a, run_b, json_out;
    eval::CompareOptions co;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "eval",
      "Zero-shot evaluation of unseen tasks and test scores of seen tasks (no training); `eval compare` "
      "reports ARG between two result folders");
  add_config_options(cmd, o->config, false);
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint to evaluate (a run's best/ or last/)");
  cmd->add_option("--tasks", o->tasks, "Comma-separated tasks (default: every task of --partition)");
  cmd->add_option("--partition", o->partitions,
                  "Comma-separated partitions of the split file: test and dev (unseen, zero-shot), train (seen)")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "Output folder (summary.json, predictions/)");
  cmd->add_option("--max-examples", o->max_examples, "Decode only the first N test examples per task (0 = all)")
      ->check(CLI::NonNegativeNumber);

  auto* compare = cmd->add_subcommand(
      "compare",
      "Per-task scores, relative gains and ARG (%) of RUN_A over RUN_B, with a paired sign-flip permutation "
      "test and a bootstrap confidence interval over (task, split) pairs");
  compare->add_option("run_a", o->run_a, "Result folder (or summary.json) of the method")->required();
  compare->add_option("run_b", o->run_b, "Result folder (or summary.json) of the baseline")->required();
  compare->add_option("--json", o->json_out, "Also write the comparison as JSON to this file");
  compare->add_option("--near-zero", o->co.near_zero_base, "Flag tasks whose base score is below this")
      ->capture_default_str();
  compare->add_option("--permutations", o->co.permutations, "Random sign assignments of the permutation test")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  compare->add_option("--bootstrap", o->co.bootstrap_samples, "Bootstrap resamples")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  compare->add_option("--seed", o->co.seed, "Seed of the permutation test and bootstrap")->capture_default_str();
  compare->callback([o] {
    auto a = read_scores(o->run_a), b = read_scores(o->run_b);
    auto c = eval::compare_runs(a, b, o->co);
    std::cout << eval::format_comparison(c, o->run_a, o->run_b);
    if (!o->json_out.empty())
      io::write_file_atomic(o->json_out, eval::comparison_to_json(c, o->run_a, o->run_b).dump(1) + "\n");
  });

  cmd->callback([cmd, o] {
    if (cmd->got_subcommand("compare")) return;
    if (o->config.file.empty()) throw UsageError("eval: --config is required (data and eval settings)");
    if (o->checkpoint.empty()) throw UsageError("eval: --checkpoint is required");
    train::EvalTasksOptions e;
    e.cfg = load_config(o->config.sources());
    e.checkpoint = o->checkpoint;
    e.tasks = split_list(o->tasks);
    e.partitions = split_list(o->partitions);
    e.out_dir = o->out;
    e.max_examples = o->max_examples;
    e.log = &std::cerr;
    auto s = train::evaluate_tasks(e);
    std::cout << train::format_eval_summary(s);
    if (!o->out.empty()) std::cout << "summary: " << o->out << "/summary.json\n";
  });
}

}  // namespace tlmoe::app
