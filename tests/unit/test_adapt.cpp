// Few-shot adaptation and zero-shot evaluation on the tiny dataset: the rows a sweep writes, the
// dev-best selection, resume, refusals, squeeze, and evaluate_checkpoint.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/dir_lock.h"
#include "common/error.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "tiny_data.h"
#include "adapt/adapt.h"
#include "io/checkpoint.h"
#include "evaluate/checkpoint_eval.h"
#include "evaluate/predict.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tlmoe::test::read_text;
using tlmoe::test::run;
using tlmoe::test::Tiny;
using tlmoe::test::train_dense_source;

namespace {

struct Row {
  std::string task, split;
  double lr = 0, dev = 0, test = 0;
  int64_t bsz = 0, best_step = 0;
  bool selected = false;
};

// results.csv parsed independently of the code that wrote it.
std::vector<Row> read_rows(const fs::path& csv) {
  std::istringstream in(read_text(csv));
  std::string line;
  std::getline(in, line);
  REQUIRE(line == "task,split,seed,lr,bsz,best_step,dev,test,selected");
  std::vector<Row> rows;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string x;
    while (std::getline(ss, x, ',')) f.push_back(x);
    REQUIRE(f.size() == 9);
    rows.push_back({f[0], f[1], std::stod(f[3]), std::stod(f[6]), std::stod(f[7]), std::stoll(f[4]), std::stoll(f[5]),
                    f[8] == "1"});
  }
  return rows;
}

tlmoe::adapt::AdaptResult adapt(const tlmoe::Config& cfg, const std::string& checkpoint, const fs::path& out,
                                int64_t stop_after = 0) {
  std::ostringstream log;
  tlmoe::adapt::AdaptOptions o;
  o.cfg = cfg;
  o.checkpoint = checkpoint;
  o.out_dir = out.string();
  o.log = &log;
  o.plain_progress = true;
  o.stop_after_points = stop_after;
  return tlmoe::adapt::adapt(o);
}

tlmoe::Config adapt_config(const Tiny& t) {
  auto c = t.config();
  c.model.experts = 1;
  c.adapt.lrs = {1e-5, 3e-3};
  c.adapt.batch_sizes = {4};
  c.adapt.steps = 12;
  c.adapt.warmup_steps = 2;
  c.adapt.eval_every = 4;
  return c;
}

}  // namespace

TEST_CASE("adapt writes one row per grid point and selects the dev-best point per split", "[adapt]") {
  Tiny t;
  auto dense = train_dense_source(t);
  auto cfg = adapt_config(t);
  auto r = adapt(cfg, (t.dir / "dense/last").string(), t.dir / "ad");
  CHECK(r.complete);
  CHECK(r.points_total == 4);  // 2 splits x 2 learning rates x 1 batch size
  auto rows = read_rows(t.dir / "ad/results.csv");
  REQUIRE(rows.size() == 4);
  // grid order: splits in prefix order, lr-major
  CHECK(rows[0].split == "second_4_13");
  CHECK(rows[0].lr == Approx(1e-5));
  CHECK(rows[1].lr == Approx(3e-3));
  CHECK(rows[2].split == "second_4_21");
  json summary = json::parse(read_text(t.dir / "ad/summary.json"));
  double mean = 0;
  for (size_t s = 0; s < 2; ++s) {
    const Row& a = rows[2 * s];
    const Row& b = rows[2 * s + 1];
    CHECK(a.selected != b.selected);                     // exactly one per split
    const Row& want = b.dev > a.dev ? b : a;             // strict '>': ties keep the first
    CHECK((want.selected));
    for (const Row* x : {&a, &b}) {
      CHECK(x->dev >= 0.0);
      CHECK(x->dev <= 1.0);
      CHECK(x->test >= 0.0);
      CHECK(x->test <= 1.0);
      CHECK(x->best_step % 4 == 0);
      CHECK(x->best_step >= 4);
    }
    mean += want.test / 2;
    CHECK(summary["tasks"]["second"]["splits"][want.split]["test"].get<double>() == Approx(want.test).margin(1e-6));
  }
  CHECK(summary["tasks"]["second"]["mean"].get<double>() == Approx(mean).margin(1e-6));
  CHECK(summary["tasks"]["second"]["metric"] == "EM");
  CHECK(summary["start"] == "vanilla");
  // the progress log's dev curve holds the selected dev score at best_step
  std::istringstream prog(read_text(t.dir / "ad/progress.jsonl"));
  std::string line;
  int lines = 0;
  while (std::getline(prog, line)) {
    json j = json::parse(line);
    double best = -1;
    int64_t at = 0;
    for (const auto& c : j["dev_curve"])
      if (c["dev"].get<double>() > best) best = c["dev"].get<double>(), at = c["step"].get<int64_t>();
    CHECK(j["dev"].get<double>() == Approx(best));
    CHECK(j["best_step"].get<int64_t>() == at);
    CHECK(j["dev_curve"].size() == 3);  // steps 4, 8, 12
    ++lines;
  }
  CHECK(lines == 4);
}

TEST_CASE("an interrupted adapt sweep resumes and ends with the uninterrupted results", "[adapt]") {
  Tiny t;
  train_dense_source(t);
  auto cfg = adapt_config(t);
  const std::string ck = (t.dir / "dense/last").string();
  adapt(cfg, ck, t.dir / "full");
  auto part = adapt(cfg, ck, t.dir / "part", 3);
  CHECK_FALSE(part.complete);
  CHECK(part.points_run == 3);
  CHECK(read_rows(t.dir / "part/results.csv").size() == 3);
  CHECK_FALSE(json::parse(read_text(t.dir / "part/summary.json"))["complete"].get<bool>());
  // a crash while appending leaves a torn line: it is dropped and that point re-run
  { std::ofstream(t.dir / "part/progress.jsonl", std::ios::app) << "{\"task\": \"sec"; }
  auto rest = adapt(cfg, ck, t.dir / "part");
  CHECK(rest.complete);
  CHECK(rest.points_reused == 3);
  CHECK(rest.points_run == 1);
  auto a = read_rows(t.dir / "full/results.csv"), b = read_rows(t.dir / "part/results.csv");
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].dev == b[i].dev);
    CHECK(a[i].test == b[i].test);
    CHECK(a[i].best_step == b[i].best_step);
    CHECK(a[i].selected == b[i].selected);
  }
}

TEST_CASE("adapt refuses bad input before fine-tuning", "[adapt]") {
  Tiny t;
  train_dense_source(t);
  auto cfg = adapt_config(t);
  const std::string ck = (t.dir / "dense/last").string();

  SECTION("another sweep in the output folder") {
    adapt(cfg, ck, t.dir / "ad", 1);
    auto other = cfg;
    other.adapt.lrs = {1e-4};
    CHECK_THROWS_AS(adapt(other, ck, t.dir / "ad"), tlmoe::UsageError);
  }
  SECTION("an unknown task, with a suggestion") {
    tlmoe::adapt::AdaptOptions o;
    o.cfg = cfg;
    o.checkpoint = ck;
    o.out_dir = (t.dir / "x").string();
    o.tasks = {"secnd"};
    std::ostringstream log;
    o.log = &log;
    CHECK_THROWS_WITH(tlmoe::adapt::adapt(o), Catch::Contains("unknown task 'secnd'") && Catch::Contains("'second'"));
  }
  SECTION("a checkpoint whose tensors do not fit its config") {
    // a TL-MoE config (2 experts) over the dense weights
    fs::copy(t.dir / "dense/last", t.dir / "bad", fs::copy_options::recursive);
    json meta = json::parse(read_text(t.dir / "bad/meta.json"));
    auto two = cfg;
    two.model.experts = 2;
    meta["config"] = tlmoe::to_yaml(two);
    tlmoe::test::write_text(t.dir / "bad/meta.json", meta.dump());
    CHECK_THROWS_AS(adapt(cfg, (t.dir / "bad").string(), t.dir / "y"), tlmoe::DataError);
    CHECK_FALSE(fs::exists(t.dir / "y/results.csv"));
  }
  SECTION("a split without its test file") {
    fs::remove(t.dir / "data/second/second_4_21_test.tsv");
    CHECK_THROWS_WITH(adapt(cfg, ck, t.dir / "z"), Catch::Contains("second_4_21_test.tsv"));
  }
}

TEST_CASE("adapt: a sweep folder held by a live process is refused before anything is written", "[adapt]") {
  Tiny t;
  train_dense_source(t);
  tlmoe::test::write_text(t.dir / "ad/.tlmoe.lock", std::to_string(::getpid()) + " " + tlmoe::io::host_name() + "\n");
  CHECK_THROWS_WITH(adapt(adapt_config(t), (t.dir / "dense/last").string(), t.dir / "ad"),
                    Catch::Contains("in use by process " + std::to_string(::getpid())));
  CHECK_FALSE(fs::exists(t.dir / "ad/sweep.json"));
  fs::remove(t.dir / "ad/.tlmoe.lock");
}

TEST_CASE("squeeze builds a dense model with the routed model's logits", "[adapt]") {
  Tiny t;
  auto cfg = t.config();
  cfg.model.experts = 3;
  cfg.model.encoder_layers = 2;
  cfg.model.decoder_layers = 2;
  cfg.routing.selection = "gumbel_st";
  tlmoe::model::TLMoEModel m(tlmoe::model::model_options(cfg, 40, 1), tlmoe::model::router_options(cfg),
                             tlmoe::model::routing_policy(cfg), 3);
  m->eval();
  const std::vector<int64_t> route = {2, 0, 1, 2};  // experts of enc1, enc2, dec1, dec2
  auto dense = tlmoe::adapt::squeeze_to_dense(m, route, cfg);
  dense->eval();
  CHECK(dense->options().experts == 1);
  std::vector<tlmoe::model::LayerRoute> routes;
  for (int64_t e : route) {
    auto idx = torch::full({2, 1}, e, torch::kLong);
    routes.push_back({torch::zeros({2, 3}).scatter_(1, idx, 1.0), idx, true});
  }
  torch::NoGradGuard g;
  auto ids = torch::randint(3, 40, {2, 7}, torch::kLong);
  auto mask = torch::ones({2, 7}, torch::kLong);
  auto dec = torch::randint(3, 40, {2, 5}, torch::kLong);
  auto routed = m->forward(ids, mask, dec, routes);
  auto plain = dense->forward(ids, mask, dec, {});
  CHECK(torch::allclose(routed, plain, 1e-5, 1e-5));
  // a different route gives different logits (the copy is not of one fixed expert)
  auto other = tlmoe::adapt::squeeze_to_dense(m, {0, 0, 0, 0}, cfg);
  other->eval();
  CHECK_FALSE(torch::allclose(other->forward(ids, mask, dec, {}), plain, 1e-3, 1e-3));
}

TEST_CASE("TL-MoE adaptation with fixed learned, average and squeezed routes", "[adapt]") {
  Tiny t;
  train_dense_source(t);
  auto cfg = t.config();
  cfg.task_rep.kind = "textemb";
  cfg.task_rep.source_checkpoint = (t.dir / "dense/last").string();
  cfg.task_rep.dim = 1;  // PCA on the 2 upstream tasks: one component
  cfg.train.steps = 6;
  run(cfg, t.dir / "moe");
  auto a = adapt_config(t);
  a.model = cfg.model;
  a.task_rep = cfg.task_rep;
  a.adapt.lrs = {3e-3};
  a.adapt.splits = {13};
  for (std::string route : {"learned", "average"}) {
    a.adapt.route = route;
    auto r = adapt(a, (t.dir / "moe/last").string(), t.dir / ("ad_" + route));
    INFO(route);
    CHECK(r.complete);
    CHECK(r.summary["route"] == route);
    const auto& ri = r.summary["tasks"]["second"]["route"];
    REQUIRE(ri["weights"].size() == 2);  // 2 routed layers
    if (route == "average") CHECK(ri["weights"][0][0].get<double>() == Approx(0.5));
    else CHECK(ri["sparse"].get<bool>());  // gumbel_st eval routes are hard
  }
  a.adapt.route = "learned";
  a.adapt.mode = "squeeze";
  CHECK(adapt(a, (t.dir / "moe/last").string(), t.dir / "ad_squeeze").complete);
  a.adapt.route = "average";
  CHECK_THROWS_AS(adapt(a, (t.dir / "moe/last").string(), t.dir / "ad_bad"), tlmoe::ConfigError);
}

TEST_CASE("evaluate_checkpoint scores seen and unseen tasks and writes predictions", "[adapt][eval]") {
  Tiny t;
  train_dense_source(t);
  tlmoe::evaluate::CheckpointEvalOptions o;
  o.cfg = t.config();
  o.checkpoint = (t.dir / "dense/last").string();
  o.partitions = {"train", "test"};
  o.out_dir = (t.dir / "ev").string();
  std::ostringstream log;
  o.log = &log;
  json s = tlmoe::evaluate::evaluate_checkpoint(o);
  REQUIRE(s["tasks"].size() == 3);
  CHECK(s["tasks"]["first"]["partition"] == "train");
  CHECK(s["tasks"]["second"]["partition"] == "test");
  // "second" is decoded from its first split's test file (seed 13 sorts before 21)
  CHECK(s["tasks"]["second"]["source"].get<std::string>().find("second_4_13_test.tsv") != std::string::npos);
  // a seen task without k-shot files is scored on its full dev file
  CHECK(s["tasks"]["first"]["source"].get<std::string>().find("first_full_dev.tsv") != std::string::npos);
  // the EM of the written predictions, recomputed here, is the reported score
  for (const std::string task : {"first", "second"}) {
    std::istringstream in(read_text(t.dir / ("ev/predictions/" + task + ".jsonl")));
    std::string line;
    int n = 0, hits = 0;
    while (std::getline(in, line)) {
      json j = json::parse(line);
      ++n;
      hits += j["prediction"] == j["golds"][0];  // golds are single lowercase words: EM = equality
    }
    CHECK(n == s["tasks"][task]["examples"].get<int>());
    CHECK(s["tasks"][task]["mean"].get<double>() == Approx(static_cast<double>(hits) / n));
  }
  CHECK(fs::exists(t.dir / "ev/summary.json"));
  CHECK_FALSE(s.contains("zero_shot_answerable"));  // no task lists labels: none is known answerable
}

TEST_CASE("eval.tau: a checkpoint is evaluated at tau of its step, at tau_min, or at a given value", "[adapt][eval]") {
  Tiny t;
  auto cfg = t.config();  // tau0 2, tau_min 0.1, anneal rate 0.05
  cfg.routing.selection = "softmax";
  cfg.train.steps = 4;
  cfg.train.tensorboard = false;
  tlmoe::test::run(cfg, t.dir / "r");
  auto eval_at = [&](const std::string& tau, bool compat) {
    tlmoe::evaluate::CheckpointEvalOptions o;
    o.cfg = t.config();
    o.cfg.eval.tau = tau;
    if (tau != "checkpoint") o.cfg.explicit_keys.insert("eval.tau");
    o.cfg.reference_compat = compat;
    o.checkpoint = (t.dir / "r/last").string();
    o.partitions = {"train"};
    o.out_dir = (t.dir / ("ev_" + tau + (compat ? "_compat" : ""))).string();
    std::ostringstream log;
    o.log = &log;
    return tlmoe::evaluate::evaluate_checkpoint(o)["routing_tau"].get<double>();
  };
  CHECK(eval_at("checkpoint", false) == Approx(2.0 * std::exp(-0.05 * 4)));  // tau(4), by hand
  CHECK(eval_at("min", false) == Approx(0.1));
  CHECK(eval_at("0.5", false) == Approx(0.5));
  CHECK(eval_at("checkpoint", true) == Approx(0.1));  // reference_compat: the reference's floor
}

TEST_CASE("evaluate_checkpoint reports the zero-shot-answerable unseen tasks separately", "[adapt][eval]") {
  Tiny t;
  train_dense_source(t);
  // every answer of every task is one of kWords: declared as labels, "second" answers with
  // words the upstream task "first" answers with, so it is answerable (seen answers)
  json words = tlmoe::test::kWords;
  tlmoe::test::write_text(t.dir / "data/tasks.json",
                          json{{"first", {{"metric", "EM"}, {"labels", words}}},
                               {"last", {{"metric", "EM"}}},
                               {"second", {{"metric", "EM"}, {"labels", words}}}}.dump());
  tlmoe::evaluate::CheckpointEvalOptions o;
  o.cfg = t.config();
  o.checkpoint = (t.dir / "dense/last").string();
  o.partitions = {"train", "test"};
  std::ostringstream log;
  o.log = &log;
  json s = tlmoe::evaluate::evaluate_checkpoint(o);
  CHECK(s["zero_shot_answerable"] == json{{"second", "seen answers"}});  // "first" is seen, not zero-shot
  CHECK(s["mean_over_answerable"].get<double>() == s["tasks"]["second"]["mean"].get<double>());
  const std::string text = tlmoe::evaluate::format_eval_summary(s);
  CHECK(text.find("mean over the 1 zero-shot-answerable tasks") != std::string::npos);
  CHECK(text.find("second (seen answers)") != std::string::npos);
}
