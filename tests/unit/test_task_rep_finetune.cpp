// FT-TextEmb (docs/method.md §5.2, §13.14): fine-tuning a copy of the source per task, then
// pooling its encoder, checked against per-example computations written out here.
#include <torch/torch.h>  // before catch.hpp: c10 defines CHECK too

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "config/config.h"
#include "data/preprocess.h"
#include "data/task_rep.h"
#include "data/token_cache.h"
#include "io/checkpoint.h"
#include "model/load_model.h"
#include "model/tlmoe_model.h"
#include "test_util.h"
#include "tiny_data.h"
#include "train/loss.h"
#include "train/task_rep_compute.h"
#include "train/task_rep_finetune.h"

namespace fs = std::filesystem;
using tlmoe::test::train_dense_source;
using tlmoe::test::Tiny;

namespace {

torch::Tensor raw_of(const fs::path& file) {
  for (auto& [n, v] : tlmoe::data::load_task_rep(file).extra)
    if (n == "raw") return v.to(torch::kDouble);
  return {};
}

std::vector<tlmoe::data::Example> examples_of(const fs::path& tok) {
  std::vector<tlmoe::data::Example> out;
  for (auto& e : tlmoe::data::read_token_cache(tok).examples) out.push_back({0, e.input_ids, e.output_ids});
  return out;
}

torch::Tensor ids_of(const std::vector<int32_t>& v, int64_t len, int64_t pad) {
  std::vector<int64_t> p(v.begin(), v.end());
  p.resize(static_cast<size_t>(len), pad);
  return torch::tensor(p, torch::kLong).unsqueeze(0);
}

// The encoder's states [len, D] of one example alone, padded to `len` with a mask of its real tokens.
torch::Tensor encode_alone(tlmoe::model::TLMoEModel& m, const std::vector<int32_t>& ids, int64_t len, int64_t pad) {
  auto x = ids_of(ids, len, pad);
  auto mask = (torch::arange(len) < static_cast<int64_t>(ids.size())).to(torch::kLong).unsqueeze(0);
  return m->encode(x, mask, {})[0].to(torch::kDouble);
}

// The summed label-smoothed loss of every example, one at a time, without dropout.
double loss_on(tlmoe::model::TLMoEModel& m, const std::vector<tlmoe::data::Example>& ex, int64_t pad, int64_t start) {
  torch::NoGradGuard g;
  m->eval();
  tlmoe::train::LossOptions lo;
  lo.pad_id = pad;
  double total = 0;
  for (const auto& e : ex) {
    auto b = tlmoe::data::collate({&e}, {0}, pad, start);
    auto logits = m->forward(b.input_ids, b.input_mask, b.decoder_input_ids, {});
    total += tlmoe::train::label_smoothed_nll(logits, b.target_ids, lo).loss.item<double>();
  }
  return total;
}

}  // namespace

TEST_CASE("ft_textemb: zero steps give the source encoder mean over the first split, steps change it",
          "[train][taskrep]") {
  Tiny t;
  const auto dense = train_dense_source(t);
  auto cfg = t.config();
  cfg.task_rep.kind = "ft_textemb";
  cfg.task_rep.source_checkpoint = (t.dir / "dense/last").string();
  cfg.task_rep.dim = 32;  // = d_model: no projection
  cfg.task_rep.ft_steps = 0;
  std::ostringstream log;
  tlmoe::data::preprocess(cfg, log);
  auto r0 = tlmoe::train::compute_task_reps(cfg, log);
  REQUIRE(r0.raw_dim == 32);
  auto rep = tlmoe::data::load_task_rep(r0.path);
  CHECK(rep.kind == "ft_textemb");
  REQUIRE(rep.tasks == std::vector<std::string>{"first", "last", "second"});
  const auto raw0 = raw_of(r0.path);

  // Per example, unpadded, mean over positions, mean over examples; "second" only from its first
  // k-shot split in string order (13, not 21).
  const auto man = tlmoe::data::read_preprocess_manifest(cfg);
  const int64_t pad = man.at("tokenizer").at("pad_id").get<int64_t>();
  const int64_t V = man.at("tokenizer").at("vocab_size").get<int64_t>();
  auto ck = tlmoe::io::load_checkpoint(t.dir / "dense/last", false);
  tlmoe::model::TLMoEModel m(tlmoe::model::model_options(dense, V, pad), tlmoe::model::router_options(dense),
                             tlmoe::model::routing_policy(dense), 3);
  const fs::path cache = fs::path(tlmoe::cache_dir(dense)) / "tokens";
  const std::vector<fs::path> files = {cache / "first/first_full_train.tok", cache / "last/last_full_train.tok",
                                       cache / "second/second_4_13_train.tok"};
  tlmoe::io::load_into(*m, ck.model, "dense");
  m->eval();
  {
    torch::NoGradGuard ng;
    for (int i = 0; i < 3; ++i) {
      auto acc = torch::zeros({32}, torch::kDouble);
      const auto ex = examples_of(files[i]);
      for (const auto& e : ex) acc += encode_alone(m, e.input, static_cast<int64_t>(e.input.size()), pad).mean(0);
      acc /= static_cast<double>(ex.size());
      INFO("task " << rep.tasks[i]);
      CHECK((raw0[i] - acc).abs().max().item<double>() < 1e-5);
    }
  }

  // Fine-tuning steps: recomputed (the options are part of the key), every task's vector moves,
  // and the log reports the fine-tuning loss.
  cfg.task_rep.ft_steps = 6;
  cfg.task_rep.ft_lr = 1e-3;
  std::ostringstream log6;
  auto r6 = tlmoe::train::compute_task_reps(cfg, log6);
  CHECK_FALSE(r6.reused);
  CHECK_THAT(log6.str(), Catch::Contains("fine-tuning loss"));
  const auto raw6 = raw_of(r6.path);
  for (int i = 0; i < 3; ++i) CHECK((raw6[i] - raw0[i]).abs().max().item<double>() > 1e-4);
  CHECK(tlmoe::data::load_task_rep(r6.path).info.at("ft_textemb").at("steps") == 6);
  // unchanged options: reused
  CHECK(tlmoe::train::compute_task_reps(cfg, log6).reused);
  // the pooling is part of the key too
  cfg.task_rep.ft_pool = "bos";
  CHECK_FALSE(tlmoe::train::compute_task_reps(cfg, log6).reused);
}

TEST_CASE("ft_textemb: fine-tuning moves the whole backbone, lowers the loss, and the reference's pooling",
          "[train][taskrep]") {
  Tiny t;
  const auto dense = train_dense_source(t);
  auto cfg = t.config();
  std::ostringstream log;
  tlmoe::data::preprocess(cfg, log);
  const auto man = tlmoe::data::read_preprocess_manifest(cfg);
  const auto& tok = man.at("tokenizer");
  const int64_t pad = tok.at("pad_id").get<int64_t>();
  const int64_t start = dense.model.decoder_start == "eos" ? tok.at("eos_id").get<int64_t>() : tok.at("bos_id").get<int64_t>();
  // 12 examples: batches of 8 and 4, so the reference's pooling reads examples 0 and 8.
  auto ex = examples_of(fs::path(tlmoe::cache_dir(dense)) / "tokens/first/first_full_train.tok");
  ex.resize(12);
  // the tiny data's inputs are all as long: each batch is led by a shorter input (cut, </s> kept), so
  // that the reference's mean reads pad positions
  const int64_t eos = tok.at("eos_id").get<int64_t>();
  for (auto [i, keep] : {std::pair<size_t, size_t>{0, 5}, {8, 7}}) {
    ex[i].input.resize(keep);
    ex[i].input.push_back(static_cast<int32_t>(eos));
  }

  auto ck = tlmoe::io::load_checkpoint(t.dir / "dense/last", false);
  tlmoe::model::TLMoEModel m(tlmoe::model::model_options(dense, tok.at("vocab_size").get<int64_t>(), pad), tlmoe::model::router_options(dense),
                             tlmoe::model::routing_policy(dense), 3);
  tlmoe::io::load_into(*m, ck.model, "dense");
  std::map<std::string, torch::Tensor> before;
  for (auto& p : m->named_parameters(true)) before[p.key()] = p.value().detach().clone();
  const double loss_before = loss_on(m, ex, pad, start);

  torch::manual_seed(5);
  tlmoe::train::FinetuneOptions o;
  o.steps = 20;
  o.lr = 3e-3;
  o.batch_size = 4;
  const double tail = tlmoe::train::finetune_whole_model(m, ex, o, pad, start, "first");
  CHECK(std::isfinite(tail));
  const double loss_after = loss_on(m, ex, pad, start);
  INFO("summed loss before " << loss_before << ", after " << loss_after);
  CHECK(loss_after < 0.8 * loss_before);
  int moved = 0, backbone = 0;
  for (auto& p : m->named_parameters(true)) {
    INFO(p.key());
    if (p.key().rfind("task_table.", 0) == 0) {
      CHECK(torch::equal(p.value(), before.at(p.key())));
      continue;
    }
    ++backbone;
    if (!torch::equal(p.value(), before.at(p.key()))) ++moved;
  }
  CHECK(moved == backbone);  // every parameter, the embeddings and LayerNorms included

  // The pooled vectors, written out per example with the example encoded alone.
  torch::NoGradGuard ng;
  m->eval();
  auto longest = [&](size_t from, size_t to) {
    size_t L = 0;
    for (size_t j = from; j < to; ++j) L = std::max(L, ex[j].input.size());
    return static_cast<int64_t>(L);
  };
  auto avg = torch::zeros({32}, torch::kDouble), bos = torch::zeros({32}, torch::kDouble);
  for (size_t b0 : {size_t{0}, size_t{8}}) {
    const int64_t T = longest(b0, std::min<size_t>(b0 + 8, ex.size()));
    auto h = encode_alone(m, ex[b0].input, T, pad);  // its batch's width: pads included
    avg += h.slice(0, 1, T - 1).mean(0) / 2.0;
    bos += h[0] / 2.0;
  }
  auto all_bos = torch::zeros({32}, torch::kDouble);
  for (const auto& e : ex) all_bos += encode_alone(m, e.input, static_cast<int64_t>(e.input.size()), pad)[0] / 12.0;
  auto got = [&](const char* variant, const char* pool) {
    return tlmoe::train::ft_textemb_vector(m, ex, pad, start, variant, pool).to(torch::kDouble);
  };
  CHECK((got("reference", "mean") - avg).abs().max().item<double>() < 1e-5);
  CHECK((got("reference", "bos") - bos).abs().max().item<double>() < 1e-5);
  CHECK((got("encoder_mean", "bos") - all_bos).abs().max().item<double>() < 1e-5);
  // the batch widths differ from example 0's own length here, so pads do enter the reference's mean
  CHECK(longest(0, 8) > static_cast<int64_t>(ex[0].input.size()));
}
