// Upstream training end to end on a tiny hand-made dataset: the loss falls, an interrupted run
// resumes bit-exactly, checkpoints are checked, and the stage-2 / dense-init paths copy what
// they should.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "config/config.h"
#include "io/safetensors.h"
#include "model/tlmoe_model.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/task_data.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using tlmoe::test::read_text;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

namespace {

const std::vector<std::string> kWords = {"amber", "birch", "cedar", "delta", "ember", "fjord",
                                         "grove", "heron", "iris",  "jade",  "kelp",  "lotus"};

// Learnable tasks: copy the first word, copy the last word, and (unseen) copy the second.
std::string lines(const std::string& task, int n, uint32_t seed) {
  std::string out;
  uint32_t s = seed;
  auto pick = [&] {
    s = s * 1664525u + 1013904223u;
    return kWords[(s >> 8) % kWords.size()];
  };
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> w;
    for (int j = 0; j < 4; ++j) w.push_back(pick());
    const std::string& ans = task == "first" ? w[0] : task == "last" ? w[3] : w[1];
    out += w[0] + " " + w[1] + " " + w[2] + " " + w[3] + "\t" + ans + "\n";
  }
  return out;
}

struct Tiny {
  TempDir dir;
  Tiny() {
    write_text(dir / "data/splits.json",
               R"({"all": ["first", "last", "second"], "train": ["first", "last"], "dev": [], "test": ["second"]})");
    write_text(dir / "data/tasks.json",
               R"({"first": {"metric": "EM"}, "last": {"metric": "EM"}, "second": {"metric": "EM"}})");
    uint32_t seed = 1;
    for (const std::string t : {"first", "last"}) {
      write_text(dir / ("data/" + t + "/" + t + "_full_train.tsv"), lines(t, 96, seed++));
      write_text(dir / ("data/" + t + "/" + t + "_full_dev.tsv"), lines(t, 16, seed++));
    }
    for (const std::string sp : {"train", "dev", "test"})
      write_text(dir / ("data/second/second_4_13_" + sp + ".tsv"), lines("second", 4, seed++));
  }
  tlmoe::Config config() const {
    tlmoe::Config c = tlmoe::Config::defaults();
    c.device = "cpu";
    c.data.dir = (dir / "data").string();
    c.data.upstream_source = "full";
    c.data.max_input_len = 24;
    c.data.max_output_len = 8;
    c.tokenizer.vocab_size = 48;
    c.model.d_model = 32;
    c.model.encoder_layers = 1;
    c.model.decoder_layers = 1;
    c.model.heads = 2;
    c.model.ffn_dim = 64;
    c.model.experts = 2;
    c.model.max_positions = 64;
    c.model.dropout = 0.1;
    c.task_rep.dim = 8;
    c.routing.hidden = 8;
    c.routing.anneal_rate = 0.05;
    c.train.steps = 30;
    c.train.batch_size = 8;
    c.train.lr = 3e-3;
    c.train.router_lr = 3e-3;
    c.train.task_lr = 1e-2;
    c.train.warmup_ratio = 0.06;
    c.train.clip_norm = 1.0;
    c.train.loss_reduction = "mean";
    c.train.eval_every = 10;
    c.train.log_every = 5;
    c.eval.batch_size = 16;
    return c;
  }
};

tlmoe::train::TrainResult run(const tlmoe::Config& cfg, const fs::path& run_dir, bool resume = false,
                              int64_t stop_after = 0) {
  std::ostringstream log;
  tlmoe::train::TrainOptions o;
  o.cfg = cfg;
  o.run_dir = run_dir.string();
  o.resume = resume;
  o.stop_after = stop_after;
  o.log = &log;
  o.plain_progress = true;
  return tlmoe::train::train(o);
}

double mean(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

}  // namespace

TEST_CASE("train: the loss falls; checkpoints, metrics and routes are written", "[train]") {
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

TEST_CASE("train: dense init copies the dense layers into every expert; stage 2 loads and freezes the router",
          "[train]") {
  Tiny t;
  auto dense = t.config();
  dense.model.experts = 1;
  dense.train.steps = 3;
  run(dense, t.dir / "dense");

  std::ostringstream log;
  auto cfg = t.config();
  cfg.model.init_from = (t.dir / "dense/last").string();
  cfg.model.init_noise = 1e-3;
  const auto data = tlmoe::train::load_task_data(cfg, log);
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
