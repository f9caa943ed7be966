// tlmoe eval --config C --checkpoint CK [--tasks a,b | --partition test,train] [--out D]
// tlmoe eval compare RUN_A RUN_B [--json F] [--near-zero X] [--permutations N] [--seed S]
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <regex>
#include <set>
#include <algorithm>
#include <cstdio>
#include <sstream>

#include "commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "metrics/compare.h"
#include "io/atomic_file.h"
#include "evaluate/checkpoint_eval.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::app {

namespace {

// summary.json of `tlmoe adapt` or `tlmoe eval` (a run directory or the file itself).
metrics::ScoreTable read_scores(const std::string& run) {
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
  metrics::ScoreTable t;
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

json read_summary(const std::string& run) {
  fs::path p = run;
  if (fs::is_directory(p)) p /= "summary.json";
  std::ifstream f(p);
  if (!f) throw DataError(p.string(), 0, "cannot read a summary (expected the --out folder of tlmoe adapt or eval)");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw DataError(p.string(), 0, std::string("damaged summary: ") + e.what());
  }
}

// One method's result folders: "DIR[+DIR...]", several runs of the method (its upstream seeds).
struct Method {
  std::vector<std::string> dirs;
  std::vector<metrics::ScoreTable> tables;
  std::vector<json> sums;
  metrics::ScoreTable joined;  // join_runs(*this, its number of runs)
};

// The runs of a method as one table of units: run i's split s is unit i * kRunStride + s, so that
// the paired test and the bootstrap treat every (run, split) as a unit and the interval includes
// the variance between runs. A method with one run is repeated n times to pair with each run of
// the other.
constexpr int64_t kRunStride = 1000000;

metrics::ScoreTable join_runs(const Method& m, size_t n) {
  metrics::ScoreTable out;
  for (size_t i = 0; i < n; ++i)
    for (const auto& [task, splits] : m.tables[m.tables.size() == 1 ? 0 : i])
      for (const auto& [seed, v] : splits) {
        if (n > 1 && (seed < 0 || seed >= kRunStride)) throw UsageError("split seed " + std::to_string(seed) + " of task '" + task + "' is out of range for joined runs");
        out[task][static_cast<int64_t>(i) * kRunStride + seed] = v;
      }
  return out;
}

std::set<std::string> split_set(const std::string& list) {
  const auto v = split_list(list);
  return {v.begin(), v.end()};
}

// Keeps only `keep`'s tasks of a result (all of them when `keep` is empty).
void keep_tasks(metrics::ScoreTable& table, json& summary, const std::set<std::string>& keep) {
  if (keep.empty()) return;
  for (auto it = table.begin(); it != table.end();) it = keep.count(it->first) ? std::next(it) : table.erase(it);
  if (!summary.contains("tasks")) return;
  json kept = json::object();
  for (auto it = summary["tasks"].begin(); it != summary["tasks"].end(); ++it)
    if (keep.count(it.key())) kept[it.key()] = it.value();
  summary["tasks"] = std::move(kept);
}

// --tasks: every named task must be in some result, or it is a typo.
void check_kept_tasks(const std::set<std::string>& keep, const std::vector<Method>& methods, const std::string& cmd) {
  for (const auto& t : keep) {
    bool found = false;
    for (const auto& m : methods)
      for (const auto& table : m.tables) found = found || table.count(t) > 0;
    if (!found) throw UsageError("eval " + cmd + ": --tasks names '" + t + "', which no result folder has");
  }
}

Method read_method(const std::string& spec, const std::set<std::string>& keep = {}) {
  Method m;
  size_t from = 0;
  while (from <= spec.size()) {
    const size_t plus = std::min(spec.find('+', from), spec.size());
    if (plus == from) throw UsageError("expected DIR[+DIR...], got '" + spec + "' (an empty run)");
    m.dirs.push_back(spec.substr(from, plus - from));
    from = plus + 1;
  }
  for (const auto& d : m.dirs) {
    m.tables.push_back(read_scores(d)), m.sums.push_back(read_summary(d));
    keep_tasks(m.tables.back(), m.sums.back(), keep);
  }
  m.joined = join_runs(m, m.tables.size());
  return m;
}

metrics::Comparison compare_methods(const Method& a, const Method& b, const std::string& name_a, const std::string& name_b,
                                    const metrics::CompareOptions& co) {
  const size_t na = a.tables.size(), nb = b.tables.size();
  if (na != nb && na != 1 && nb != 1)
    throw UsageError(name_a + " has " + std::to_string(na) + " runs and " + name_b + " " + std::to_string(nb) +
                     ": runs pair one to one (or one run pairs with each of the other's)");
  const size_t n = std::max(na, nb);
  return metrics::compare_runs(join_runs(a, n), join_runs(b, n), co);
}

// Mean over a method's (run, split) units of a task's score; NaN when it has none.
double method_task_mean(const Method& m, const std::string& task) {
  auto it = m.joined.find(task);
  if (it == m.joined.end() || it->second.empty()) return NAN;
  double s = 0;
  for (const auto& [seed, v] : it->second) s += v;
  return s / static_cast<double>(it->second.size());
}

std::string fmt_pct(double v) {
  if (!std::isfinite(v)) return "n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%+.1f%%", v);
  return b;
}

// The warnings a summary carries about its upstream model (training health), one line per run
// that has any; such runs are marked "(!)" in the table.
bool has_health_warnings(const json& summary) {
  const json h = summary.value("upstream_health", json(nullptr));
  return h.is_object() && !h.value("warnings", json::array()).empty();
}

std::string health_notes(const std::vector<std::string>& names, const std::vector<Method>& methods) {
  std::string notes;
  for (size_t i = 0; i < methods.size(); ++i)
    for (size_t r = 0; r < methods[i].sums.size(); ++r) {
      const json& sum = methods[i].sums[r];
      if (!has_health_warnings(sum)) continue;
      notes += "(!) ";
      notes += names[i];
      if (methods[i].sums.size() > 1) notes += " run " + std::to_string(r + 1);
      notes += ":";
      for (const auto& w : sum["upstream_health"]["warnings"]) {
        notes += ' ';
        notes += w.get<std::string>();
        notes += ';';
      }
      notes.back() = '\n';
    }
  return notes;
}

bool method_has_warnings(const Method& m) {
  return std::any_of(m.sums.begin(), m.sums.end(), [](const json& s) { return has_health_warnings(s); });
}

// `tlmoe eval table NAME=DIR...`: the runs side by side per task, then ARG for pairs of them.
void run_table(const std::vector<std::string>& runs, const std::string& pairs_arg, const std::string& markdown,
               const metrics::CompareOptions& co, const std::set<std::string>& keep) {
  std::vector<std::string> names, dirs;
  for (const auto& r : runs) {
    const auto eq = r.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == r.size())
      throw UsageError("eval table: expected NAME=DIR, got '" + r + "'");
    names.push_back(r.substr(0, eq));
    dirs.push_back(r.substr(eq + 1));
  }
  auto index_of = [&](const std::string& n) {
    auto it = std::find(names.begin(), names.end(), n);
    if (it == names.end()) throw UsageError("eval table: --pairs names unknown run '" + n + "'");
    return static_cast<size_t>(it - names.begin());
  };
  std::vector<std::pair<size_t, size_t>> pairs;  // (method, base)
  if (pairs_arg.empty()) {
    for (size_t b = 0; b < names.size(); ++b)
      for (size_t a = b + 1; a < names.size(); ++a) pairs.emplace_back(a, b);
  } else {
    for (const auto& p : split_list(pairs_arg)) {
      const auto slash = p.find('/');
      if (slash == std::string::npos) throw UsageError("eval table: --pairs expects A/B items, got '" + p + "'");
      pairs.emplace_back(index_of(p.substr(0, slash)), index_of(p.substr(slash + 1)));
    }
  }
  std::vector<Method> methods;
  std::set<std::string> tasks;
  for (const auto& d : dirs) {
    methods.push_back(read_method(d, keep));
    for (const auto& s : methods.back().sums)
      for (auto it = s["tasks"].begin(); it != s["tasks"].end(); ++it) tasks.insert(it.key());
  }
  check_kept_tasks(keep, methods, "table");
  std::ostringstream txt, md;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-26s %-20s", "task", "metric");
  txt << buf;
  md << "| task | metric |";
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string n = names[i] + (method_has_warnings(methods[i]) ? " (!)" : "");
    std::snprintf(buf, sizeof buf, " %12s", n.c_str());
    txt << buf;
    md << " " << n << " |";
  }
  txt << "\n";
  md << "\n|---|---|";
  for (size_t i = 0; i < names.size(); ++i) md << "---:|";
  md << "\n";
  std::vector<double> sum(names.size(), 0.0);
  std::vector<int64_t> cnt(names.size(), 0);
  for (const auto& t : tasks) {
    std::string metric;
    for (const auto& m : methods)
      for (const auto& s : m.sums)
        if (s["tasks"].contains(t)) metric = s["tasks"][t].value("metric", "");
    std::snprintf(buf, sizeof buf, "%-26s %-20s", t.c_str(), metric.c_str());
    txt << buf;
    md << "| " << t << " | " << metric << " |";
    for (size_t i = 0; i < names.size(); ++i) {
      const double v = method_task_mean(methods[i], t);
      if (std::isfinite(v)) sum[i] += v, ++cnt[i];
      std::snprintf(buf, sizeof buf, " %12s", std::isfinite(v) ? std::to_string(v).substr(0, 6).c_str() : "n/a");
      txt << buf;
      md << " " << (std::isfinite(v) ? std::to_string(v).substr(0, 6) : std::string("n/a")) << " |";
    }
    txt << "\n";
    md << "\n";
  }
  std::snprintf(buf, sizeof buf, "%-26s %-20s", "mean", "");
  txt << buf;
  md << "| **mean** | |";
  for (size_t i = 0; i < names.size(); ++i) {
    const double v = cnt[i] ? sum[i] / static_cast<double>(cnt[i]) : NAN;
    std::snprintf(buf, sizeof buf, " %12s", std::isfinite(v) ? std::to_string(v).substr(0, 6).c_str() : "n/a");
    txt << buf;
    md << " " << (std::isfinite(v) ? std::to_string(v).substr(0, 6) : std::string("n/a")) << " |";
  }
  txt << "\n\n";
  md << "\n";
  if (!pairs.empty())  // one column alone has nothing to compare with: no empty table
    md << "\n| comparison | ARG (all tasks) | ARG (unflagged) | tasks unflagged | p (sign-flip) | 95% CI (unflagged) |\n"
          "|---|---:|---:|---:|---:|---|\n";
  for (const auto& [a, b] : pairs) {
    auto c = compare_methods(methods[a], methods[b], names[a], names[b], co);
    std::snprintf(buf, sizeof buf, "ARG %s over %s: %s over %zu tasks; %s over the %zu unflagged (p = %s, 95%% CI [%s, %s])\n",
                  names[a].c_str(), names[b].c_str(), fmt_pct(c.all.arg_percent).c_str(), c.all.tasks,
                  fmt_pct(c.unflagged.arg_percent).c_str(), c.unflagged.tasks, metrics::format_p(c.unflagged.p_value).c_str(),
                  fmt_pct(c.unflagged.ci_low_percent).c_str(), fmt_pct(c.unflagged.ci_high_percent).c_str());
    txt << buf;
    std::snprintf(buf, sizeof buf, "| %s over %s | %s | %s | %zu of %zu | %s | [%s, %s] |\n", names[a].c_str(),
                  names[b].c_str(), fmt_pct(c.all.arg_percent).c_str(), fmt_pct(c.unflagged.arg_percent).c_str(),
                  c.unflagged.tasks, c.all.tasks, metrics::format_p(c.unflagged.p_value).c_str(), fmt_pct(c.unflagged.ci_low_percent).c_str(),
                  fmt_pct(c.unflagged.ci_high_percent).c_str());
    md << buf;
  }
  if (!pairs.empty())
    txt << "(flagged tasks have a base score near zero, negative or NaN: their relative gain is not meaningful; "
           "`tlmoe eval compare A B` lists them)\n";
  const std::string notes = health_notes(names, methods);
  txt << notes;
  if (!notes.empty()) md << "\n" << std::regex_replace(notes, std::regex("\n"), "  \n");
  std::cout << txt.str();
  if (!markdown.empty()) io::write_file_atomic(markdown, md.str());
}

}  // namespace

void setup_eval(CLI::App& app) {
  struct Opts {
    ConfigOptions config;
    std::string checkpoint, tasks, partitions = "test", out;
    int64_t max_examples = 0;
    std::string run_a, run_b, json_out;
    std::vector<std::string> table_runs;
    std::string pairs, markdown, only_tasks;
    metrics::CompareOptions co;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "eval",
      "Zero-shot evaluation of unseen tasks and test scores of seen tasks (no training); `eval compare` "
      "reports ARG between two result folders");
  add_config_options(cmd, o->config, false);
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint to evaluate: a run's best/ or last/, or hf:DIR, a Hugging Face BART directory as "
                  "transformers saves it (its tokenizer and generation_config.json are used unless the config sets them)");
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
  compare->add_option("run_a", o->run_a, "Result folder (or summary.json) of the method; DIR+DIR+... for several runs of it (upstream seeds), paired run by run with run_b's")->required();
  compare->add_option("run_b", o->run_b, "Result folder (or summary.json) of the baseline; DIR+DIR+... for several runs (one run pairs with each of run_a's)")->required();
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
  compare->add_option("--tasks", o->only_tasks, "Comma-separated tasks: compare on these only (default every task)");
  compare->callback([o] {
    const auto keep = split_set(o->only_tasks);
    const Method a = read_method(o->run_a, keep), b = read_method(o->run_b, keep);
    check_kept_tasks(keep, {a, b}, "compare");
    auto c = compare_methods(a, b, o->run_a, o->run_b, o->co);
    std::cout << metrics::format_comparison(c, o->run_a, o->run_b) << health_notes({o->run_a, o->run_b}, {a, b});
    if (!o->json_out.empty())
      io::write_file_atomic(o->json_out, metrics::comparison_to_json(c, o->run_a, o->run_b).dump(1) + "\n");
  });

  auto* table = cmd->add_subcommand(
      "table", "Several result folders side by side per task, and ARG with significance for pairs of them");
  table->add_option("runs", o->table_runs, "NAME=DIR items (adapt or eval --out folders), in column order; NAME=DIR+DIR+... joins several runs of one method (upstream seeds): its scores are the mean over runs and splits, and ARG's test and interval take every (run, split) as a unit")
      ->required();
  table->add_option("--pairs", o->pairs,
                    "Comma-separated METHOD/BASE name pairs to compare (default: every later column over every "
                    "earlier one)");
  table->add_option("--markdown", o->markdown, "Also write the tables as Markdown to this file");
  table->add_option("--permutations", o->co.permutations, "Random sign assignments of the permutation test")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  table->add_option("--seed", o->co.seed, "Seed of the permutation test and bootstrap")->capture_default_str();
  table->add_option("--tasks", o->only_tasks,
                    "Comma-separated tasks: compare on these only (for example the zero-shot-answerable ones that "
                    "`tlmoe eval` lists); default every task");
  table->callback([o] { run_table(o->table_runs, o->pairs, o->markdown, o->co, split_set(o->only_tasks)); });

  cmd->callback([cmd, o] {
    if (cmd->got_subcommand("compare") || cmd->got_subcommand("table")) return;
    if (o->config.file.empty()) throw UsageError("eval: --config is required (data and eval settings)");
    if (o->checkpoint.empty()) throw UsageError("eval: --checkpoint is required");
    evaluate::CheckpointEvalOptions e;
    e.cfg = load_config(o->config.sources());
    e.checkpoint = o->checkpoint;
    e.tasks = split_list(o->tasks);
    e.partitions = split_list(o->partitions);
    e.out_dir = o->out;
    e.max_examples = o->max_examples;
    e.log = &std::cerr;
    auto s = evaluate::evaluate_checkpoint(e);
    std::cout << evaluate::format_eval_summary(s);
    if (!o->out.empty()) std::cout << "summary: " << o->out << "/summary.json\n";
  });
}

}  // namespace tlmoe::app
