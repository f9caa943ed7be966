// Upstream training end to end on a tiny hand-made dataset: the loss falls, an interrupted run
// resumes bit-exactly, checkpoints are checked, and the stage-2 / dense-init paths copy what
// they should.
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "common/error.h"
#include "config/config.h"
#include "io/safetensors.h"
#include "model/layers.h"
#include "model/load_model.h"
#include "model/router.h"
#include "model/tlmoe_model.h"
#include "test_util.h"
#include "tiny_data.h"
#include "io/checkpoint.h"
#include "io/dir_lock.h"
#include "data/preprocess.h"
#include "data/task_rep.h"
#include "data/token_cache.h"
#include "train/upstream_data.h"
#include "train/task_rep_compute.h"
#include "train/trainer.h"
#include "train/model_init.h"

namespace fs = std::filesystem;
using tlmoe::test::read_text;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;
using tlmoe::test::Tiny;
using tlmoe::test::run;
using tlmoe::test::metrics_without_timings;
using tlmoe::test::train_dense_source;

namespace {

double mean(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

}  // namespace

TEST_CASE("train: the loss falls, checkpoints, metrics and routes are written", "[train]") {
  Tiny t;
  auto cfg = t.config();
  cfg.train.steps = 80;
  cfg.train.eval_every = 40;
  const fs::path rd = t.dir / "run";
  auto r = run(cfg, rd);
  REQUIRE(r.step == 80);
  REQUIRE(r.step_losses.size() == 80);
  const double first = mean(r.step_losses, 0, 10), last = mean(r.step_losses, 70, 80);
  INFO("first 10 steps " << first << ", last 10 steps " << last);
  CHECK(last < 0.6 * first);
  // log(48) ≈ 3.87 nats is chance level for a 48-token vocabulary: the first steps are near it.
  CHECK(first > 2.5);

  for (const char* f : {"config.resolved.yaml", "metrics.jsonl", "best/model.safetensors", "best/meta.json",
                        "last/model.safetensors", "last/optimizer.safetensors", "routes/step_0000040.json",
                        "routes/step_0000080.json"})
    CHECK(fs::exists(rd / f));
  std::ifstream m(rd / "metrics.jsonl");
  std::string line;
  int dev_lines = 0, loss_lines = 0;
  while (std::getline(m, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("dev_loss")) {
      ++dev_lines;
      CHECK(std::isfinite(j["dev_loss"].get<double>()));
    }
    if (j.contains("loss")) {
      ++loss_lines;
      CHECK(j.contains("route_entropy"));
      CHECK(j["peak_memory_kind"] == "cpu_peak_rss");
      CHECK(j["peak_memory_bytes"].get<int64_t>() > (int64_t{1} << 20));
    }
  }
  CHECK(dev_lines == 2);
  CHECK(loss_lines == 16);
  auto routes = nlohmann::json::parse(read_text(rd / "routes/step_0000080.json"));
  CHECK(routes["tasks"] == nlohmann::json({"first", "last", "second"}));
  CHECK(routes["routes"].size() == 3);
  CHECK(routes["routes"][0].size() == 2);     // layers
  CHECK(routes["routes"][0][0].size() == 2);  // experts
  const double row = routes["routes"][0][0][0].get<double>() + routes["routes"][0][0][1].get<double>();
  CHECK(row == Approx(1.0).margin(1e-9));
  auto meta = nlohmann::json::parse(read_text(rd / "last/meta.json"));
  CHECK(meta["step"] == 80);
  CHECK(meta["trainer"]["best_step"].get<int64_t>() == r.best_step);
}

TEST_CASE("train: bf16 autocast (train.precision) learns as fp32 does", "[train][device]") {
  Tiny t;
  auto cfg = t.config();
  cfg.train.steps = 80;
  cfg.train.eval_every = 80;
  cfg.train.precision = "bf16";
  auto r = run(cfg, t.dir / "run");
  REQUIRE(r.step == 80);
  const double first = mean(r.step_losses, 0, 10), last = mean(r.step_losses, 70, 80);
  INFO("first 10 steps " << first << ", last 10 steps " << last);
  CHECK(first > 2.5);
  CHECK(last < 0.6 * first);
  // the checkpoint holds fp32 master weights
  auto ck = tlmoe::io::load_checkpoint(t.dir / "run/last");
  for (const auto& [name, tensor] : ck.model)
    if (tensor.is_floating_point()) CHECK(tensor.scalar_type() == torch::kFloat);
}

TEST_CASE("train: an interrupted run resumes bit-exactly", "[train]") {
  Tiny t;
  auto cfg = t.config();  // dropout and gumbel noise on: the RNG state must travel too
  auto full = run(cfg, t.dir / "a");
  auto part1 = run(cfg, t.dir / "b", false, 13);
  CHECK(part1.stopped_early);
  CHECK(part1.step == 13);
  auto part2 = run(cfg, t.dir / "b", true);
  CHECK(part2.step == 30);
  std::vector<double> joined = part1.step_losses;
  joined.insert(joined.end(), part2.step_losses.begin(), part2.step_losses.end());
  REQUIRE(joined.size() == full.step_losses.size());
  for (size_t i = 0; i < joined.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(joined[i] == full.step_losses[i]);
  }
  auto a = tlmoe::io::load_safetensors(t.dir / "a/last/model.safetensors");
  auto b = tlmoe::io::load_safetensors(t.dir / "b/last/model.safetensors");
  REQUIRE(a.names == b.names);
  for (const auto& n : a.names) {
    INFO(n);
    CHECK(torch::equal(a.tensors.at(n), b.tensors.at(n)));
  }
}

TEST_CASE("train: resumed runs log the uninterrupted run's metrics.jsonl, line for line", "[train]") {
  Tiny t;
  auto cfg = t.config();
  cfg.train.save_every = 10;
  cfg.train.tensorboard = false;
  run(cfg, t.dir / "a");
  const auto want = metrics_without_timings(t.dir / "a/metrics.jsonl");
  REQUIRE(want.size() == 9);  // 6 training lines (every 5 steps) and 3 evaluations

  // Killed after logging steps 21-30 (and half a line) but before step 30's checkpoint.
  fs::copy(t.dir / "a", t.dir / "b", fs::copy_options::recursive);
  fs::remove_all(t.dir / "b/last");
  fs::rename(t.dir / "b/step_20", t.dir / "b/last");
  { std::ofstream(t.dir / "b/metrics.jsonl", std::ios::app) << R"({"step": 31, "lo)"; }
  run(cfg, t.dir / "b", true);
  CHECK(metrics_without_timings(t.dir / "b/metrics.jsonl") == want);

  // Killed before its first checkpoint: a plain rerun is refused, --resume starts it over.
  write_text(t.dir / "c/config.resolved.yaml", read_text(t.dir / "a/config.resolved.yaml"));
  write_text(t.dir / "c/metrics.jsonl", R"({"step": 5, "loss": 9.5})" "\n");
  try {
    run(cfg, t.dir / "c");
    FAIL("a directory holding a run was accepted without --resume");
  } catch (const tlmoe::UsageError& e) {
    CHECK_THAT(e.what(), Catch::Contains("stopped before its first checkpoint") && Catch::Contains("--resume"));
  }
  run(cfg, t.dir / "c", true);
  CHECK(metrics_without_timings(t.dir / "c/metrics.jsonl") == want);
}

TEST_CASE("checkpoints of tlmoe before the reference's router names load as the layer-specific routers", "[train]") {
  // tlmoe's "gru" and "transformer" of that time were gru_layer_specific and transformer_layer_specific
  // (feed-forward width = routing.hidden, heads the largest divisor of it up to 4); their configs
  // had no transformer_heads / transformer_ffn
  for (const std::string old_name : {"gru", "transformer"}) {
    DYNAMIC_SECTION(old_name) {
      Tiny t;
      auto cfg = t.config();
      cfg.train.steps = 2;
      cfg.train.tensorboard = false;
      cfg.routing.router = old_name + "_layer_specific";
      cfg.routing.transformer_ffn = cfg.routing.hidden;
      cfg.routing.transformer_heads = tlmoe::model::legacy_transformer_router_heads(cfg.routing.hidden);
      run(cfg, t.dir / "r");
      auto now = tlmoe::model::load_model((t.dir / "r/last").string());
      auto meta = nlohmann::json::parse(read_text(t.dir / "r/last/meta.json"));
      std::string yaml = meta["config"].get<std::string>();
      yaml = std::regex_replace(yaml, std::regex("router: \"" + old_name + "_layer_specific\""), "router: \"" + old_name + "\"");
      yaml = std::regex_replace(yaml, std::regex("\\n *transformer_(heads|ffn): [0-9]+"), "");
      REQUIRE(yaml.find("router: \"" + old_name + "\"\n") != std::string::npos);
      REQUIRE(yaml.find("transformer_ffn") == std::string::npos);
      meta["config"] = yaml;
      write_text(t.dir / "r/last/meta.json", meta.dump(1));
      auto then = tlmoe::model::load_model((t.dir / "r/last").string());
      CHECK(then.cfg.routing.router == old_name + "_layer_specific");
      torch::NoGradGuard ng;
      CHECK(torch::equal(then.model->router_logits(torch::tensor({0, 1, 0})),
                         now.model->router_logits(torch::tensor({0, 1, 0}))));
    }
  }
}

TEST_CASE("train.alternate_every: the held side does not move (reference_compat: zeroed gradients, momentum moves it)", "[train]") {
  auto router_side = [](const std::string& name) {
    return name.rfind("router.", 0) == 0 || name.rfind("task_table.", 0) == 0;
  };
  // how many router-side and backbone tensors differ between two checkpoints
  auto changed = [&](const fs::path& a, const fs::path& b) {
    auto x = tlmoe::io::load_safetensors(a / "model.safetensors"), y = tlmoe::io::load_safetensors(b / "model.safetensors");
    std::pair<int, int> n{0, 0};
    for (const auto& name : x.names) {
      if (torch::equal(x.tensors.at(name), y.tensors.at(name))) continue;
      (router_side(name) ? n.first : n.second) += 1;
    }
    return n;
  };
  for (const bool compat : {false, true}) {
    DYNAMIC_SECTION("reference_compat " << compat) {
      Tiny t;
      auto cfg = t.config();
      cfg.train.alternate_every = 1;  // step 1 holds the router, 2 the backbone, 3 the router
      cfg.train.tensorboard = false;
      cfg.train.warmup_ratio = 0;
      cfg.reference_compat = compat;
      const fs::path r = t.dir / "r";
      run(cfg, r, false, 1);
      fs::copy(r / "last", t.dir / "s1", fs::copy_options::recursive);
      run(cfg, r, true, 1);
      fs::copy(r / "last", t.dir / "s2", fs::copy_options::recursive);
      run(cfg, r, true, 1);
      const auto step2 = changed(t.dir / "s1", t.dir / "s2"), step3 = changed(t.dir / "s2", r / "last");
      CHECK(step2.first > 0);   // step 2 trains the router and the task table
      CHECK(step3.second > 0);  // step 3 trains the backbone
      if (!compat) {
        CHECK(step2.second == 0);  // ... with the backbone held still
        CHECK(step3.first == 0);   // ... with the router and task table held still
      } else {
        CHECK(step2.second > 0);  // zeroed gradients: step 1's momentum (and decay) still moves the backbone
      }
    }
  }
}

TEST_CASE("train: existing runs, mismatched and damaged checkpoints are refused", "[train]") {
  Tiny t;
  auto cfg = t.config();
  cfg.train.steps = 4;
  run(cfg, t.dir / "r");
  CHECK_THROWS_AS(run(cfg, t.dir / "r"), tlmoe::UsageError);           // exists, no --resume
  CHECK_THROWS_AS(run(cfg, t.dir / "none", true), tlmoe::UsageError);  // --resume of nothing
  const std::string before = read_text(t.dir / "r/last/model.safetensors");

  auto other = cfg;
  other.model.ffn_dim = 48;
  other.train.steps = 8;
  try {
    run(other, t.dir / "r", true);
    FAIL("a checkpoint of another shape was accepted");
  } catch (const tlmoe::DataError& e) {
    CHECK_THAT(e.what(), Catch::Contains("model.safetensors"));
    CHECK_THAT(e.what(), Catch::Contains("fc1.weight"));
  }
  CHECK(read_text(t.dir / "r/last/model.safetensors") == before);  // nothing overwritten

  // Truncated weights: a DataError naming the file.
  write_text(t.dir / "r/last/model.safetensors", before.substr(0, before.size() / 2));
  cfg.train.steps = 8;
  CHECK_THROWS_AS(run(cfg, t.dir / "r", true), tlmoe::DataError);
}

TEST_CASE("train: dense init copies the dense layers into every expert, stage 2 loads and freezes the router",
          "[train]") {
  Tiny t;
  const auto dense = train_dense_source(t);

  std::ostringstream log;
  auto cfg = t.config();
  cfg.model.init_from = (t.dir / "dense/last").string();
  cfg.model.init_noise = 1e-3;
  const auto data = tlmoe::train::load_upstream_data(cfg, log);
  tlmoe::model::TLMoEModel m(tlmoe::model::model_options(cfg, data.vocab_size, data.pad_id),
                             tlmoe::model::router_options(cfg), tlmoe::model::routing_policy(cfg),
                             static_cast<int64_t>(data.task_names.size()));
  tlmoe::train::initialise_model(*m, cfg, data);
  auto ck = tlmoe::io::load_safetensors(t.dir / "dense/last/model.safetensors");
  auto params = m->named_parameters(true);
  for (const std::string sub : {"self_attn.q_proj.weight", "fc2.bias", "final_layer_norm.weight"}) {
    const auto& src = ck.tensors.at("model.encoder.layers.0." + sub);
    for (int e = 0; e < 2; ++e) {
      const auto& dst = params["model.encoder.layers.0.experts." + std::to_string(e) + "." + sub];
      const auto d = (dst - src).abs().max().item<double>();
      INFO(sub << " expert " << e);
      CHECK(d > 0);      // noise was added
      CHECK(d < 1e-2);   // ~ 5 sigma of N(0, 1e-3)
    }
  }
  CHECK(torch::equal(params["model.shared.weight"], ck.tensors.at("model.shared.weight")));
  CHECK(torch::equal(m->final_logits_bias, ck.tensors.at("final_logits_bias")));

  // Stage 1 -> stage 2: the router and task table come from stage 1 and stay fixed.
  auto s1 = t.config();
  s1.train.steps = 5;
  run(s1, t.dir / "s1");
  auto s2 = t.config();
  s2.train.steps = 5;
  s2.routing.init_from = (t.dir / "s1/last").string();
  s2.routing.freeze = true;
  s2.task_rep.freeze = true;
  run(s2, t.dir / "s2");
  auto a = tlmoe::io::load_safetensors(t.dir / "s1/last/model.safetensors");
  auto b = tlmoe::io::load_safetensors(t.dir / "s2/last/model.safetensors");
  int routers = 0;
  for (const auto& n : a.names)
    if (n.rfind("router.", 0) == 0 || n == "task_table.weight") {
      INFO(n);
      CHECK(torch::equal(a.tensors.at(n), b.tensors.at(n)));
      ++routers;
    }
  CHECK(routers >= 3);
  CHECK_FALSE(torch::equal(a.tensors.at("model.shared.weight"), b.tensors.at("model.shared.weight")));

  // model.init_from with the same shape: the backbone is copied exactly, routing stays fresh.
  auto same = t.config();
  same.model.init_from = (t.dir / "s1/last").string();
  tlmoe::model::TLMoEModel m2(tlmoe::model::model_options(same, data.vocab_size, data.pad_id),
                              tlmoe::model::router_options(same), tlmoe::model::routing_policy(same),
                              static_cast<int64_t>(data.task_names.size()));
  tlmoe::train::initialise_model(*m2, same, data);
  auto p2 = m2->named_parameters(true);
  CHECK(torch::equal(p2["model.decoder.layers.0.experts.1.fc1.weight"],
                     a.tensors.at("model.decoder.layers.0.experts.1.fc1.weight")));
  CHECK(torch::equal(m2->final_logits_bias, a.tensors.at("final_logits_bias")));
  CHECK_FALSE(torch::equal(p2["task_table.weight"], a.tensors.at("task_table.weight")));
}

TEST_CASE("task representations: textemb against a per-example reference, PCA, reuse, and training on them",
          "[train][taskrep]") {
  Tiny t;
  const auto dense = train_dense_source(t);

  auto cfg = t.config();
  cfg.task_rep.kind = "textemb";
  cfg.task_rep.source_checkpoint = (t.dir / "dense/last").string();
  cfg.task_rep.dim = 32;  // = d_model: no projection
  std::ostringstream log;
  const auto data = tlmoe::train::load_upstream_data(cfg, log);  // computes the file on the way
  const fs::path file = tlmoe::data::task_rep_path(cfg);
  REQUIRE(fs::exists(file));
  auto rep = tlmoe::data::load_task_rep(file);
  REQUIRE(rep.tasks == std::vector<std::string>{"first", "last", "second"});
  torch::Tensor raw;
  for (auto& [n, v] : rep.extra)
    if (n == "raw") raw = v;
  REQUIRE(raw.defined());
  REQUIRE(raw.sizes() == torch::IntArrayRef({3, 32}));

  // Reference: the dense source model, one example at a time (no padding at all), mean over
  // positions, mean over examples; "first" and "last" have only full train files, "second"
  // only a k-shot split.
  auto ck = tlmoe::io::load_checkpoint(t.dir / "dense/last", false);
  tlmoe::model::TLMoEModel m(tlmoe::model::model_options(dense, data.vocab_size, data.pad_id),
                             tlmoe::model::router_options(dense), tlmoe::model::routing_policy(dense), 3);
  tlmoe::io::load_into(*m, ck.model, "dense");
  m->eval();
  torch::NoGradGuard ng;
  const fs::path cache = fs::path(tlmoe::cache_dir(dense)) / "tokens";
  // every k-shot train file of a task (both splits of "second"); the full train file otherwise
  const std::vector<std::vector<fs::path>> files = {
      {cache / "first/first_full_train.tok"},
      {cache / "last/last_full_train.tok"},
      {cache / "second/second_4_13_train.tok", cache / "second/second_4_21_train.tok"}};
  for (int i = 0; i < 3; ++i) {
    auto acc = torch::zeros({32}, torch::kDouble);
    int64_t n = 0;
    for (const auto& f : files[i])
      for (const auto& e : tlmoe::data::read_token_cache(f).examples) {
        auto ids = torch::tensor(std::vector<int64_t>(e.input_ids.begin(), e.input_ids.end()), torch::kLong).unsqueeze(0);
        auto h = m->encode(ids, torch::ones_like(ids), {});
        acc += h[0].mean(0).to(torch::kDouble);
        ++n;
      }
    acc /= static_cast<double>(n);
    INFO("task " << rep.tasks[i]);
    CHECK((raw[i].to(torch::kDouble) - acc).abs().max().item<double>() < 1e-5);
  }
  // The matrix is the raw vectors scaled to unit standard deviation over upstream tasks.
  auto up = raw.slice(0, 0, 2).to(torch::kDouble);
  const double scale = 1.0 / up.std().item<double>();
  CHECK((rep.matrix.to(torch::kDouble) - raw.to(torch::kDouble) * scale).abs().max().item<double>() < 1e-5);

  // Unchanged inputs: reused, the file untouched.
  const std::string bytes = read_text(file);
  auto again = tlmoe::train::compute_task_reps(cfg, log);
  CHECK(again.reused);
  CHECK(read_text(file) == bytes);

  // PCA to 1 dimension (2 upstream tasks, centred: rank 1, so one component carries all the
  // variance): a unit component; upstream rows are reconstructed exactly from the projection.
  auto pca = cfg;
  pca.task_rep.dim = 1;
  auto r2 = tlmoe::train::compute_task_reps(pca, log);
  CHECK_FALSE(r2.reused);
  CHECK(r2.raw_dim == 32);
  auto p = tlmoe::data::load_task_rep(file);
  torch::Tensor mu, comps;
  for (auto& [n, v] : p.extra) {
    if (n == "pca.mean") mu = v.to(torch::kDouble);
    if (n == "pca.components") comps = v.to(torch::kDouble);
  }
  REQUIRE(comps.sizes() == torch::IntArrayRef({1, 32}));
  CHECK(comps[0].norm().item<double>() == Approx(1.0).epsilon(1e-5));
  const double s2 = p.info["scale"].get<double>();
  auto rec = mu + torch::matmul(p.matrix.to(torch::kDouble) / s2, comps);
  CHECK((rec.slice(0, 0, 2) - up).abs().max().item<double>() < 1e-4);
  // 2 components of 2 centred points: refused before anything is embedded (no per-task lines)
  auto too_big = cfg;
  too_big.task_rep.dim = 2;
  std::ostringstream early;
  CHECK_THROWS_WITH(tlmoe::train::compute_task_reps(too_big, early),
                    Catch::Contains("has at most 1 components that carry variance; set task_rep.dim <= 1"));
  CHECK(early.str().find("[1/") == std::string::npos);
  too_big.task_rep.dim = 33;  // above the source model's d_model 32
  CHECK_THROWS_WITH(tlmoe::train::compute_task_reps(too_big, early),
                    Catch::Contains("larger than the textemb vectors (the source model's d_model, 32)"));
  auto no_source = cfg;
  no_source.task_rep.source_checkpoint = "";
  CHECK_THROWS_AS(tlmoe::train::compute_task_reps(no_source, log), tlmoe::ConfigError);

  // Training with a frozen textemb table keeps exactly the file's vectors.
  auto tr = cfg;
  tr.task_rep.freeze = true;
  tr.train.steps = 3;
  {
    torch::AutoGradMode on(true);
    run(tr, t.dir / "te");
  }
  auto after = tlmoe::io::load_safetensors(t.dir / "te/last/model.safetensors");
  auto table = tlmoe::data::load_task_rep(file);
  CHECK(torch::equal(after.tensors.at("task_table.weight"), table.matrix));
}

TEST_CASE("task representations: fisher of adapter weights", "[train][taskrep]") {
  Tiny t;
  const auto dense = train_dense_source(t);
  auto cfg = t.config();
  cfg.task_rep.kind = "fisher";
  cfg.task_rep.source_checkpoint = (t.dir / "dense/last").string();
  cfg.task_rep.fisher_adapter_dim = 2;
  cfg.task_rep.fisher_steps = 4;
  cfg.task_rep.fisher_lr = 1e-3;
  cfg.task_rep.dim = 1;  // PCA of the 2 upstream tasks: one component
  std::ostringstream log;
  tlmoe::data::preprocess(cfg, log);
  auto r = tlmoe::train::compute_task_reps(cfg, log);
  // 1 encoder layer x 2 adapters + 1 decoder layer x 3 adapters, each a down [2,32] and an up [32,2] weight
  CHECK(r.raw_dim == (1 * 2 + 1 * 3) * 2 * (2 * 32));
  auto rep = tlmoe::data::load_task_rep(r.path);
  CHECK(rep.kind == "fisher");
  CHECK(rep.matrix.sizes() == torch::IntArrayRef({3, 1}));
  torch::Tensor raw;
  for (auto& [n, v] : rep.extra)
    if (n == "raw") raw = v;
  REQUIRE(raw.defined());
  CHECK(raw.min().item<double>() >= 0.0);  // squared gradients
  for (int i = 0; i < 3; ++i) CHECK(raw[i].sum().item<double>() > 0.0);
  // different tasks, different Fisher vectors
  CHECK_FALSE(torch::allclose(raw[0], raw[1]));
  // a routed source is refused
  auto routed = t.config();
  routed.train.steps = 2;
  run(routed, t.dir / "routed");
  cfg.task_rep.source_checkpoint = (t.dir / "routed/last").string();
  CHECK_THROWS_AS(tlmoe::train::compute_task_reps(cfg, log), tlmoe::ConfigError);
}

TEST_CASE("adapters sit before the residual add of each sub-layer (docs/method.md §5.3)", "[train][taskrep]") {
  torch::manual_seed(3);
  tlmoe::model::LayerOptions o;
  o.d_model = 16;
  o.heads = 2;
  o.ffn_dim = 24;
  o.adapter_dim = 3;
  tlmoe::model::EncoderLayer enc(o);
  enc->eval();
  REQUIRE(enc->adapters.size() == 2);
  auto names = enc->named_parameters(true);
  CHECK(names.contains("adapters.0.down.weight"));
  CHECK(names.contains("adapters.1.up.bias"));
  torch::NoGradGuard g;
  auto x = torch::randn({2, 5, 16});
  auto mask = torch::ones({2, 1, 1, 5}, torch::kBool);
  auto adapter = [](const tlmoe::model::Adapter& a, const torch::Tensor& v) {
    return v + torch::matmul(torch::gelu(torch::matmul(v, a->down->weight.t()) + a->down->bias), a->up->weight.t()) +
           a->up->bias;
  };
  auto ln = [](const torch::nn::LayerNorm& l, const torch::Tensor& v) {
    return torch::layer_norm(v, {v.size(-1)}, l->weight, l->bias, 1e-5);
  };
  auto sa = enc->self_attn(x, torch::Tensor(), mask, false);
  auto h = ln(enc->self_attn_layer_norm, x + adapter(enc->adapters[0], sa));
  auto f = torch::matmul(torch::gelu(torch::matmul(h, enc->fc1->weight.t()) + enc->fc1->bias), enc->fc2->weight.t()) +
           enc->fc2->bias;
  auto want = ln(enc->final_layer_norm, h + adapter(enc->adapters[1], f));
  CHECK((enc(x, mask) - want).abs().max().item<double>() < 1e-5);

  tlmoe::model::DecoderLayer dec(o);
  CHECK(dec->adapters.size() == 3);
  o.adapter_dim = 0;
  tlmoe::model::EncoderLayer plain(o);
  CHECK(plain->adapters.empty());
  CHECK_FALSE(plain->named_parameters(true).contains("adapters.0.down.weight"));
}

TEST_CASE("the progress line shows the temperature only for a routed model", "[train]") {
  Tiny t;
  for (const int64_t experts : {1, 2}) {
    auto cfg = t.config();
    cfg.model.experts = experts;
    cfg.train.steps = 2;
    std::ostringstream log;
    tlmoe::train::TrainOptions o;
    o.cfg = cfg;
    o.run_dir = (t.dir / ("r" + std::to_string(experts))).string();
    o.log = &log;
    o.plain_progress = true;
    tlmoe::train::train(o);
    INFO(log.str());
    CHECK(log.str().find("train 2/2") != std::string::npos);
    CHECK((log.str().find("τ") != std::string::npos) == (experts > 1));
  }
}

TEST_CASE("one writer per run directory: a live holder's lock refuses, a dead one's is taken over", "[train]") {
  Tiny t;
  auto cfg = t.config();
  cfg.train.steps = 2;
  cfg.train.tensorboard = false;
  const fs::path r = t.dir / "r";
  // a live holder: this very process, on this host (another tlmoe train running there)
  write_text(r / ".tlmoe.lock", std::to_string(::getpid()) + " " + tlmoe::io::host_name() + "\n");
  try {
    run(cfg, r);
    FAIL("a locked run directory was written");
  } catch (const tlmoe::UsageError& e) {
    CHECK_THAT(e.what(), Catch::Contains("in use by process " + std::to_string(::getpid())) &&
                             Catch::Contains(tlmoe::io::host_name()));
  }
  CHECK_FALSE(fs::exists(r / "metrics.jsonl"));  // nothing written
  // another host's lock cannot be checked: refused, naming the file to remove
  write_text(r / ".tlmoe.lock", "12345 some-other-host\n");
  CHECK_THROWS_WITH(run(cfg, r), Catch::Contains("some-other-host") && Catch::Contains(".tlmoe.lock"));
  // a process of this host that is gone: a child that has exited and been reaped
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  write_text(r / ".tlmoe.lock", std::to_string(child) + " " + tlmoe::io::host_name() + "\n");
  std::ostringstream log;
  tlmoe::train::TrainOptions o;
  o.cfg = cfg;
  o.run_dir = r.string();
  o.log = &log;
  o.plain_progress = true;
  CHECK(tlmoe::train::train(o).step == 2);
  CHECK_THAT(log.str(), Catch::Contains("taking over") && Catch::Contains(std::to_string(child)));
  CHECK_FALSE(fs::exists(r / ".tlmoe.lock"));  // released at the end
}
