// A tiny learnable CrossFit-layout dataset and short training runs on it, shared by the tests of
// training, adaptation and evaluation: upstream tasks "first" and "last" (copy the first / last of
// four words) with full train and dev files; the unseen task "second" (copy the second word) with
// k-shot splits of seeds 13 and 21.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "adapt/adapt.h"
#include "config/config.h"
#include "test_util.h"
#include "train/trainer.h"

namespace tlmoe::test {

inline const std::vector<std::string> kWords = {"amber", "birch", "cedar", "delta", "ember", "fjord",
                                         "grove", "heron", "iris",  "jade",  "kelp",  "lotus"};

// Learnable tasks: copy the first word, copy the last word, and (unseen) copy the second.
inline std::string lines(const std::string& task, int n, uint32_t seed) {
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
    for (const std::string split : {"13", "21"})
      for (const std::string sp : {"train", "dev", "test"})
        write_text(dir / ("data/second/second_4_" + split + "_" + sp + ".tsv"), lines("second", 4, seed++));
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
    c.eval.max_len = 16;
    return c;
  }
};

inline tlmoe::train::TrainResult run(const tlmoe::Config& cfg, const std::filesystem::path& run_dir, bool resume = false,
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

// A short vanilla (m = 1) run at {dir}/dense, the source of dense init and task representations.
// metrics.jsonl without its timings (throughput, decoding time, memory), which differ run to run.
inline std::vector<nlohmann::json> metrics_without_timings(const std::filesystem::path& p) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_text(p));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"tokens_per_s", "dev_score_seconds", "peak_memory_bytes"}) j.erase(k);
    out.push_back(j);
  }
  return out;
}

// A small adapt sweep from `checkpoint` into `out`: one lr (1e-3), batch 4, 2 steps evaluated at
// each, no warmup, no TensorBoard, plain progress to `log`.
inline tlmoe::adapt::AdaptOptions tiny_adapt(const tlmoe::Config& cfg, const std::filesystem::path& checkpoint,
                                             const std::filesystem::path& out, std::ostream& log) {
  tlmoe::adapt::AdaptOptions ao;
  ao.cfg = cfg;
  ao.cfg.adapt.lrs = {1e-3};
  ao.cfg.adapt.batch_sizes = {4};
  ao.cfg.adapt.steps = 2;
  ao.cfg.adapt.eval_every = 1;
  ao.cfg.adapt.warmup_steps = 0;
  ao.cfg.adapt.tensorboard = false;
  ao.checkpoint = checkpoint.string();
  ao.out_dir = out.string();
  ao.log = &log;
  ao.plain_progress = true;
  return ao;
}

inline tlmoe::Config train_dense_source(const Tiny& t) {
  auto dense = t.config();
  dense.model.experts = 1;
  dense.train.steps = 3;
  run(dense, t.dir / "dense");
  return dense;
}

}  // namespace tlmoe::test
