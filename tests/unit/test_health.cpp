// Training health (docs/train.md, Training health): the spread of predictions, collapse, and the
// convergence verdict from dev evaluations. Every expected value is worked out by hand next to it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <sstream>

#include "common/error.h"
#include "metrics/health.h"
#include "metrics/spread.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tlmoe::metrics::assess_health;
using tlmoe::metrics::HealthOptions;
using tlmoe::metrics::prediction_spread;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

TEST_CASE("prediction_spread: shares, distinct answers and collapse", "[health]") {
  // 10 predictions: "pos" 9 times (one with spaces, stripped), "neg" once; golds alternate pos/neg.
  std::vector<std::string> preds(8, "pos");
  preds.push_back(" pos ");
  preds.push_back("neg");
  tlmoe::metrics::Golds golds;
  for (int i = 0; i < 10; ++i) golds.push_back({i % 2 ? "neg" : "pos", "other"});
  auto s = prediction_spread(preds, golds, 0.8);
  CHECK(s.examples == 10);
  CHECK(s.distinct == 2);
  CHECK(s.top_share == Approx(0.9));  // 9 of 10
  CHECK(s.top_prediction == "pos");
  CHECK(s.gold_top_share == Approx(0.5));  // first golds: 5 pos, 5 neg
  CHECK(s.collapsed);                      // 0.9 > 0.8 while 0.5 <= 0.8

  // the same predictions where the gold answers are one answer too: not a collapse
  tlmoe::metrics::Golds same(10, {"pos"});
  CHECK_FALSE(prediction_spread(preds, same, 0.8).collapsed);
  // at the threshold exactly: 8 of 10 is not more than 0.8
  std::vector<std::string> eight(8, "a");
  eight.push_back("b");
  eight.push_back("c");
  CHECK_FALSE(prediction_spread(eight, golds, 0.8).collapsed);
  // too few examples to tell
  CHECK_FALSE(prediction_spread({"a", "a", "a", "a"}, {{"a"}, {"b"}, {"c"}, {"d"}}, 0.8).collapsed);
  CHECK(prediction_spread({"a", "a", "a", "a", "a"}, {{"a"}, {"b"}, {"c"}, {"d"}, {"e"}}, 0.8).collapsed);
  // ties: the lexicographically first answer
  CHECK(prediction_spread({"b", "a", "b", "a"}, {{"x"}, {"y"}, {"z"}, {"w"}}, 0.8).top_prediction == "a");
  CHECK_THROWS_AS(prediction_spread({"a"}, {}, 0.8), std::invalid_argument);
}

namespace {

json eval_line(int64_t step, double loss, double score, std::vector<std::string> collapsed = {}) {
  return {{"step", step}, {"dev_loss", loss}, {"dev_score", score}, {"collapsed_tasks", collapsed}};
}

}  // namespace

TEST_CASE("assess_health: converged, still improving, collapsed, unknown", "[health]") {
  HealthOptions o;
  o.plateau_tolerance = 0.05;
  o.final_step = 1000;
  // first half (steps <= 500) best 0.40 at 500; last half best 0.41 at 1000: +2.5% < 5% -> converged
  auto h = assess_health({eval_line(250, 3, 0.30), eval_line(500, 2, 0.40), eval_line(750, 1.9, 0.405),
                          eval_line(1000, 1.8, 0.41)},
                         o);
  CHECK(h["metric"] == "dev score");
  CHECK(h["converged"] == true);
  CHECK(h["verdict"] == "ok");
  CHECK(h["best_step"] == 1000);
  CHECK(h["trend"]["change"].get<double>() == Approx(0.025));
  CHECK(h["trend"]["first_half_step"] == 500);

  // the quickstart's curve: 0.0888, 0.1332 | 0.1494, 0.1507 -> (0.1507 - 0.1332) / 0.1332 = +13.1%
  h = assess_health({eval_line(250, 3.44, 0.0888), eval_line(500, 2.83, 0.1332), eval_line(750, 2.68, 0.1494),
                     eval_line(1000, 2.61, 0.1507)},
                    o);
  CHECK(h["converged"] == false);
  CHECK(h["verdict"] == "not converged");
  CHECK(h["trend"]["change"].get<double>() == Approx((0.1507 - 0.1332) / 0.1332));
  auto w = tlmoe::metrics::health_warnings(h);
  REQUIRE(w.size() == 1);
  CHECK_THAT(w[0], Catch::Contains("not converged") && Catch::Contains("13.1%"));

  // collapsed at the best step (750) but not at the last: the verdict follows the best step
  h = assess_health({eval_line(250, 3, 0.1), eval_line(500, 2, 0.4), eval_line(750, 1.9, 0.42, {"t1", "t2"}),
                     eval_line(1000, 1.9, 0.41)},
                    o);
  CHECK(h["best_step"] == 750);
  CHECK(h["collapsed_best"] == json::array({"t1", "t2"}));
  CHECK(h["collapsed_last"].empty());
  CHECK(h["verdict"] == "collapsed");

  // by loss when no line has a score: 2.0 (first half) -> 1.99 (last half) is a 0.5% decrease
  h = assess_health({{{"step", 300}, {"dev_loss", 2.5}}, {{"step", 500}, {"dev_loss", 2.0}},
                     {{"step", 1000}, {"dev_loss", 1.99}}},
                    o);
  CHECK(h["metric"] == "dev loss");
  CHECK(h["converged"] == true);
  CHECK(h["trend"]["change"].get<double>() == Approx(0.005));

  // select_by: loss judges by the loss although the lines have scores: best step 750 (loss 1.8)
  o.by_loss = true;
  h = assess_health({eval_line(250, 3, 0.1), eval_line(500, 2, 0.4), eval_line(750, 1.8, 0.3),
                     eval_line(1000, 1.9, 0.41)},
                    o);
  CHECK(h["metric"] == "dev loss");
  CHECK(h["best_step"] == 750);
  CHECK(h["trend"]["change"].get<double>() == Approx(0.1));  // (2.0 - 1.8) / 2.0
  o.by_loss = false;

  // two evaluations: too few to tell
  h = assess_health({eval_line(500, 2, 0.4), eval_line(1000, 1.8, 0.41)}, o);
  CHECK(h["converged"].is_null());
  CHECK(h["verdict"] == "unknown");
  // no dev data: NaN losses (written as null) and no score
  h = assess_health({{{"step", 500}, {"dev_loss", nullptr}}, {{"step", 1000}, {"dev_loss", nullptr}}}, o);
  CHECK(h["verdict"] == "unknown");
  CHECK_THAT(h["messages"][0].get<std::string>(), Catch::Contains("dev sets are empty"));
}

TEST_CASE("read_dev_evaluations and checkpoint_health read what train writes", "[health]") {
  TempDir d;
  // a resumed run logs step 20 twice: the last line wins; train lines (no dev_loss) are skipped
  write_text(d / "run/metrics.jsonl", "{\"step\":10,\"loss\":3}\n{\"step\":20,\"dev_loss\":2.5}\n"
                                      "{\"step\":20,\"dev_loss\":2.0}\n{\"step\":30,\"dev_loss\":1.5}\n");
  auto e = tlmoe::metrics::read_dev_evaluations(d / "run/metrics.jsonl");
  REQUIRE(e.size() == 2);
  CHECK(e[0]["dev_loss"] == 2.0);
  CHECK(e[1]["step"] == 30);
  write_text(d / "bad.jsonl", "{\"step\":1}\nnot json\n");
  CHECK_THROWS_WITH(tlmoe::metrics::read_dev_evaluations(d / "bad.jsonl"), Catch::Contains("bad.jsonl:2"));
  CHECK(tlmoe::metrics::read_dev_evaluations(d / "missing.jsonl").empty());

  // the checkpoint's own collapse list (its meta.json), the run's convergence (health.json)
  write_text(d / "run/best/meta.json", R"({"health": {"verdict": "collapsed", "collapsed_last": ["a"]}})");
  write_text(d / "run/health.json", R"({"verdict": "not converged", "converged": false, "collapsed_best": ["b"],
                                        "metric": "dev score", "trend": {"change": 0.2}})");
  auto h = tlmoe::metrics::checkpoint_health(d / "run/best");
  CHECK(h["collapsed"] == json::array({"a"}));
  CHECK(h["converged"] == false);
  CHECK(tlmoe::metrics::checkpoint_health((d / "run/best").string() + "/")["converged"] == false);  // trailing slash
  std::ostringstream log;
  auto r = tlmoe::metrics::report_upstream_health((d / "run/best").string(), log);
  REQUIRE(r["warnings"].size() == 2);
  CHECK_THAT(log.str(), Catch::Contains("warning: upstream model not converged") &&
                            Catch::Contains("20.0% in the last half") && Catch::Contains("collapsed on 1 dev task(s)"));
  CHECK(tlmoe::metrics::report_upstream_health("hf:/x", log).is_null());
  CHECK(tlmoe::metrics::checkpoint_health(d / "nothing").is_null());
}

TEST_CASE("truncate_metrics_log keeps the lines up to a step and drops a torn last line", "[health]") {
  TempDir d;
  const fs::path p = d / "metrics.jsonl";
  CHECK(tlmoe::metrics::truncate_metrics_log(p, 10) == 0);  // no file: nothing to do
  CHECK_FALSE(fs::exists(p));
  const std::string head = "{\"step\": 5, \"loss\": 2.0}\n{\"step\": 10, \"dev_loss\": 1.5}\n";
  write_text(p, head + "{\"step\": 15, \"loss\": 1.0}\n{\"step\": 20, \"lo");
  CHECK(tlmoe::metrics::truncate_metrics_log(p, 10) == 2);
  CHECK(tlmoe::test::read_text(p) == head);
  CHECK(tlmoe::metrics::truncate_metrics_log(p, 10) == 0);  // already cut: unchanged
  CHECK(tlmoe::test::read_text(p) == head);
  CHECK(tlmoe::metrics::truncate_metrics_log(p, 0) == 2);   // a start from step 0 keeps nothing
  CHECK(tlmoe::test::read_text(p).empty());
}
