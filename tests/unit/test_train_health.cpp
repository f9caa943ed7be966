// Training health end to end on the tiny dataset (docs/train.md, Training health and Dev data):
// a model that learns nothing is flagged as collapsed, a learning one is not; upstream tasks
// without a full dev file hold out the tail of their training file; best/ is written even
// without any dev example.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "adapt/adapt.h"
#include "analysis/analyze.h"
#include "config/config.h"
#include "evaluate/checkpoint_eval.h"
#include "metrics/health.h"
#include "test_util.h"
#include "tiny_data.h"
#include "train/trainer.h"
#include "train/upstream_data.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tlmoe::test::read_text;
using tlmoe::test::run;
using tlmoe::test::Tiny;
using tlmoe::test::write_text;

namespace {

tlmoe::train::TrainResult run_logged(const tlmoe::Config& cfg, const fs::path& run_dir, std::string& log_text) {
  std::ostringstream log;
  tlmoe::train::TrainOptions o;
  o.cfg = cfg;
  o.run_dir = run_dir.string();
  o.log = &log;
  o.plain_progress = true;
  auto r = tlmoe::train::train(o);
  log_text = log.str();
  return r;
}

}  // namespace

TEST_CASE("train health: a model that learns nothing is flagged as collapsed", "[train][health]") {
  // (so is the tiny model of the other training tests, which learns the answers' distribution but
  // not yet the copying: below, the same model with a larger initialisation learns it)
  Tiny t;
  auto cfg = t.config();
  cfg.train.lr = cfg.train.router_lr = cfg.train.task_lr = 0.0;  // the random initial model throughout
  cfg.train.steps = 30;
  std::string log;
  auto r = run_logged(cfg, t.dir / "run", log);
  // every dev answer copies one of 12 words (at most a few alike among 16), while the untrained model
  // gives one answer to every input
  const auto evals = tlmoe::metrics::read_dev_evaluations(t.dir / "run/metrics.jsonl");
  REQUIRE(evals.size() == 3);
  const json& last = evals.back();
  CHECK(last["collapsed_tasks"] == json::array({"first", "last"}));
  CHECK(last["dev_task_spread"]["first"]["top_share"].get<double>() > 0.8);
  CHECK(last["dev_task_spread"]["first"]["gold_top_share"].get<double>() <= 0.25);
  CHECK(last["dev_task_spread"]["first"]["distinct"].get<int64_t>() <= 3);
  CHECK(last["warnings"][0].get<std::string>().find("collapsed on 2 of 2 dev tasks") != std::string::npos);
  CHECK_THAT(log, Catch::Contains("warning: step 10: predictions collapsed on 2 of 2 dev tasks"));
  // the dev loss does not move: a plateau, yet collapsed
  CHECK(r.health["verdict"] == "collapsed");
  CHECK(r.health["converged"] == true);
  CHECK_THAT(log, Catch::Contains("health: collapsed"));
  const json file = json::parse(read_text(t.dir / "run/health.json"));
  CHECK(file["verdict"] == "collapsed");
  CHECK(file["collapsed_best"] == json::array({"first", "last"}));
  const json meta = json::parse(read_text(t.dir / "run/best/meta.json"));
  CHECK(meta["health"]["collapsed_last"] == json::array({"first", "last"}));
  // what reports built on best/ say
  std::ostringstream report_log;
  const json h = tlmoe::metrics::report_upstream_health((t.dir / "run/best").string(), report_log);
  CHECK(h["collapsed"] == json::array({"first", "last"}));
  CHECK_THAT(report_log.str(), Catch::Contains("warning: upstream model collapsed on 2 dev task(s)"));
}

TEST_CASE("train health: a model that learns its tasks is not flagged", "[train][health]") {
  Tiny t;
  auto cfg = t.config();
  cfg.train.steps = 300;
  cfg.train.eval_every = 75;
  cfg.model.init_std = 0.2;  // with BART's 0.02 this model this small answers every input alike for hundreds of steps
  std::string log;
  auto r = run_logged(cfg, t.dir / "run", log);
  const auto evals = tlmoe::metrics::read_dev_evaluations(t.dir / "run/metrics.jsonl");
  REQUIRE(evals.size() == 4);
  INFO(evals.back().dump());
  CHECK(evals.back()["collapsed_tasks"].empty());
  CHECK(evals.back()["dev_task_spread"]["first"]["distinct"].get<int64_t>() >= 5);
  CHECK(r.health["collapsed_best"].empty());
  CHECK(r.health["verdict"] != "collapsed");
  CHECK(r.health["trend"].is_object());
  CHECK_THAT(log, !Catch::Contains("collapsed at the best step"));  // early evaluations may warn
}

TEST_CASE("train: upstream tasks without a full dev file hold out the tail of their training file", "[train][health]") {
  Tiny t;
  fs::remove(t.dir / "data/first/first_full_dev.tsv");
  auto cfg = t.config();
  std::ostringstream log;
  const auto d = tlmoe::train::load_upstream_data(cfg, log);
  // 96 full-train lines: the last 96 / 10 = 9 are dev; "last" keeps its 16-line dev file
  REQUIRE(d.held_out.size() == 1);
  CHECK(d.held_out.at("first").count == 9);
  CHECK(d.held_out.at("first").first == 87);
  CHECK(d.train.size() == (96 - 9) + 96);
  CHECK(d.dev.size() == 9 + 16);
  CHECK_THAT(log.str(), Catch::Contains("1 upstream task(s) have no {task}_full_dev.tsv (first)") &&
                            Catch::Contains("9 examples held out"));
  CHECK(tlmoe::train::held_out_size(1) == 0);
  CHECK(tlmoe::train::held_out_size(5) == 1);
  CHECK(tlmoe::train::held_out_size(100000) == 500);

  cfg.train.steps = 10;
  cfg.train.eval_every = 5;
  std::string train_log;
  run_logged(cfg, t.dir / "run", train_log);
  const auto evals = tlmoe::metrics::read_dev_evaluations(t.dir / "run/metrics.jsonl");
  REQUIRE(!evals.empty());
  CHECK(evals.back()["dev_task_spread"]["first"]["examples"] == 9);
  CHECK(evals.back()["dev_task_spread"]["last"]["examples"] == 16);
  CHECK(fs::exists(t.dir / "run/best/meta.json"));
}

TEST_CASE("train: without any dev example the dev loss is n/a and best/ is still written", "[train][health]") {
  Tiny t;
  for (const std::string task : {"first", "last"}) {  // one training line each: nothing to hold out
    fs::remove(t.dir / ("data/" + task + "/" + task + "_full_dev.tsv"));
    write_text(t.dir / ("data/" + task + "/" + task + "_full_train.tsv"), tlmoe::test::lines(task, 1, 7));
  }
  auto cfg = t.config();
  cfg.train.steps = 4;
  cfg.train.eval_every = 2;
  std::string log;
  auto r = run_logged(cfg, t.dir / "run", log);
  CHECK_THAT(log, Catch::Contains("warning: no dev examples") && Catch::Contains("dev loss n/a (no dev examples)"));
  CHECK(fs::exists(t.dir / "run/best/meta.json"));
  CHECK(r.best_step == 4);  // every evaluation is the best: the last one
  CHECK(r.health["verdict"] == "unknown");
}

TEST_CASE("train health: eval, adapt and analyze-routes on a collapsed model say so", "[train][health]") {
  Tiny t;
  auto cfg = t.config();
  cfg.train.lr = cfg.train.router_lr = cfg.train.task_lr = 0.0;  // collapsed, as above
  cfg.train.steps = 30;
  std::string train_log;
  run_logged(cfg, t.dir / "run", train_log);
  const std::string best = (t.dir / "run/best").string();

  std::ostringstream eval_log;
  tlmoe::evaluate::CheckpointEvalOptions eo;
  eo.cfg = cfg;
  eo.checkpoint = best;
  eo.out_dir = (t.dir / "ev").string();
  eo.log = &eval_log;
  tlmoe::evaluate::evaluate_checkpoint(eo);
  const json ev = json::parse(read_text(t.dir / "ev/summary.json"));
  CHECK(ev["upstream_health"]["verdict"] == "collapsed");
  CHECK(ev["upstream_health"]["collapsed"] == json::array({"first", "last"}));
  CHECK_THAT(eval_log.str(), Catch::Contains("warning: upstream model collapsed on 2 dev task(s)"));

  std::ostringstream adapt_log;
  auto ao = tlmoe::test::tiny_adapt(cfg, best, t.dir / "ad", adapt_log);
  tlmoe::adapt::adapt(ao);
  const json ad = json::parse(read_text(t.dir / "ad/summary.json"));
  CHECK(ad["upstream_health"]["warnings"].size() == 1);
  CHECK_THAT(adapt_log.str(), Catch::Contains("warning: upstream model collapsed"));

  std::ostringstream analysis_log;
  tlmoe::analysis::AnalyzeOptions an;
  an.cfg = cfg;
  an.checkpoint = best;
  an.out_dir = (t.dir / "an").string();
  an.log = &analysis_log;
  tlmoe::analysis::analyze_routes(an);
  const std::string report = read_text(t.dir / "an/report.md");
  CHECK_THAT(report, Catch::Contains("**Caution: the routes below come from an unhealthy model**") &&
                         Catch::Contains("> - upstream model collapsed on 2 dev task(s)"));
  CHECK(json::parse(read_text(t.dir / "an/stats.json"))["upstream_health"]["verdict"] == "collapsed");

  // a healthy checkpoint's report has no caution: the same run's health.json rewritten as healthy
  write_text(t.dir / "run/health.json", R"({"verdict": "ok", "converged": true, "collapsed_best": []})");
  json meta = json::parse(read_text(t.dir / "run/best/meta.json"));
  meta["health"]["collapsed_last"] = json::array();
  write_text(t.dir / "run/best/meta.json", meta.dump());
  an.out_dir = (t.dir / "an2").string();
  tlmoe::analysis::analyze_routes(an);
  CHECK_THAT(read_text(t.dir / "an2/report.md"), !Catch::Contains("Caution"));
}
