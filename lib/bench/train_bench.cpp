// `tlmoe bench train` (bench.h): the variants, the synthetic workload, the timed rounds, the report.
#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <vector>

#include "bench/bench.h"
#include "bench/common.h"
#include "common/device.h"
#include "common/host_cache.h"
#include "kernels/device.h"
#include "model/tlmoe_model.h"
#include "train/loss.h"
#include "train/optim.h"

namespace tlmoe::bench {

namespace {

using Clock = std::chrono::steady_clock;

double secs_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Variant {
  std::string name;
  Config cfg;
  model::TLMoEModel model{nullptr};
  std::unique_ptr<train::AdamW> opt;
  double best_tps = 0;      // training step
  double best_fwd_tps = 0;  // inference forward (no grad, eval mode), mixed-task batches
  double best_fwd1_tps = 0; // the same on single-task batches (how eval and adapt score a task)
  HostCacheStats cache_in_best{};   // CPU block cache activity during the best round's timed steps
  std::array<double, 3> phase_s{};  // forward, backward, optimizer seconds per step (best round)
  bool dense = false;               // every expert runs
};

// The same synthetic batches for every variant, and how a step runs them.
struct Workload {
  torch::Device dev = torch::kCPU;
  bool bf16 = false;
  int64_t accum = 1;  // micro-batches per optimizer step, as `tlmoe train` runs them
  int64_t num_tasks = 1;
  std::vector<std::array<torch::Tensor, 4>> batches;  // source [B,S], target [B,T], decoder input [B,T], task ids [B]
  torch::Tensor mask;                                 // [B,S]
  train::LossOptions lo;
};

// vanilla (m = 1), dense MoE (every expert runs; unless skip_dense), sparse top-1 MoE.
std::vector<Variant> make_variants(const Config& base, const BenchTrainOptions& o, int64_t V, int64_t pad,
                                   const torch::Device& dev) {
  std::vector<Variant> vs(o.skip_dense ? 2 : 3);
  vs[0].name = "vanilla (m=1)";
  vs[0].cfg = base;
  vs[0].cfg.model.experts = 1;
  if (!o.skip_dense) {
    vs[1].name = "dense MoE (m=" + std::to_string(base.model.experts) + ", dense_st)";
    vs[1].cfg = base;
    vs[1].cfg.routing.selection = "gumbel_st";
    vs[1].cfg.routing.estimator = "dense_st";
    vs[1].dense = true;
  }
  auto& sp = vs.back();
  sp.name = "sparse top-1 MoE (m=" + std::to_string(base.model.experts) + ", sparse)";
  sp.cfg = base;
  sp.cfg.routing.selection = "gumbel_st";
  sp.cfg.routing.estimator = "sparse";
  for (auto& v : vs) {
    v.cfg.routing.baseline = "none";
    v.cfg.model.dropout = base.model.dropout;
    torch::manual_seed(0);
    v.model = model::TLMoEModel(model::model_options(v.cfg, V, pad), model::router_options(v.cfg),
                                model::routing_policy(v.cfg), o.num_tasks);
    v.model->to(dev);
    v.model->train();
    train::GroupSpec gs{v.cfg.train.lr, v.cfg.train.router_lr, v.cfg.train.task_lr, v.cfg.train.weight_decay};
    v.opt = std::make_unique<train::AdamW>(train::build_param_groups(*v.model, gs), train::AdamWOptions{});
  }
  return vs;
}

Workload make_workload(const Config& base, const BenchTrainOptions& o, int64_t V, int64_t pad, const torch::Device& dev) {
  Workload w;
  w.dev = dev;
  w.bf16 = kernels::use_bf16_autocast(base.train.precision, dev);
  w.accum = base.train.grad_accum;
  w.num_tasks = o.num_tasks;
  const int64_t B = base.train.batch_size;
  torch::manual_seed(1);
  for (int64_t i = 0; i < o.steps * w.accum; ++i) {
    auto src = torch::randint(4, V, {B, o.src_len}, torch::kLong);
    auto tgt = torch::randint(4, V, {B, o.tgt_len}, torch::kLong);
    auto dec = torch::cat({torch::full({B, 1}, 2, torch::kLong), tgt.slice(1, 0, o.tgt_len - 1)}, 1);
    auto tasks = torch::randint(0, o.num_tasks, {B}, torch::kLong);
    w.batches.push_back({src.to(dev), tgt.to(dev), dec.to(dev), tasks.to(dev)});
  }
  w.mask = torch::ones({B, o.src_len}, torch::kLong).to(dev);
  w.lo.pad_id = pad;
  return w;
}

// Optimizer steps of `accum` micro-batches each (gradients accumulate, the loss of each
// micro-batch scaled by 1/accum as in training); returns the seconds per step spent in forward
// (incl. loss), backward and the optimizer, summed over the step's micro-batches.
std::array<double, 3> run_steps(Variant& v, const Workload& w, int64_t n) {
  std::array<double, 3> ph{};
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t a = 0; a < w.accum; ++a) {
      const auto& b = w.batches[(i * w.accum + a) % w.batches.size()];
      model::RouteContext ctx;
      ctx.training = true;
      ctx.tau = 1.0;
      auto t = Clock::now();
      torch::Tensor logits;
      {
        kernels::AutocastGuard amp(w.bf16, w.dev);
        logits = v.model->forward(b[0], w.mask, b[2], v.model->routes(b[3], ctx));
      }
      auto loss = train::label_smoothed_nll(logits, b[1], w.lo).loss;
      if (w.accum > 1) loss = loss / static_cast<double>(w.accum);
      sync(w.dev);
      ph[0] += secs_since(t);
      t = Clock::now();
      loss.backward();
      sync(w.dev);
      ph[1] += secs_since(t);
    }
    auto t = Clock::now();
    v.opt->step(1.0);
    v.opt->zero_grad();
    sync(w.dev);
    ph[2] += secs_since(t);
  }
  return ph;
}

// Inference forward passes (eval mode, no autograd): the cost of scoring a batch.
void run_forward(Variant& v, const Workload& w, int64_t n, bool single_task) {
  torch::NoGradGuard ng;
  kernels::AutocastGuard amp(w.bf16, w.dev);
  v.model->eval();
  for (int64_t i = 0; i < n; ++i) {
    const auto& b = w.batches[i % w.batches.size()];
    model::RouteContext ctx;
    ctx.training = false;
    ctx.tau = 1.0;
    auto tasks = single_task ? torch::full_like(b[3], i % w.num_tasks) : b[3];
    v.model->forward(b[0], w.mask, b[2], v.model->routes(tasks, ctx));
  }
  sync(w.dev);
  v.model->train();
}

// One round of one variant: warm-up, timed training steps, timed forward passes; keeps the best.
void measure(Variant& v, const Workload& w, const BenchTrainOptions& o, double tokens_per_step,
             double tokens_per_forward, int64_t r, std::ostream& log) {
  run_steps(v, w, o.warmup_steps);
  const auto c0 = host_cache_stats();
  auto t0 = Clock::now();
  auto ph = run_steps(v, w, o.steps);
  double tps = tokens_per_step * static_cast<double>(o.steps) / secs_since(t0);
  if (tps > v.best_tps) {
    v.best_tps = tps;
    const auto c1 = host_cache_stats();
    v.cache_in_best = c1;
    v.cache_in_best.hits -= c0.hits;
    v.cache_in_best.misses -= c0.misses;
    v.cache_in_best.evictions -= c0.evictions;
    for (int j = 0; j < 3; ++j) v.phase_s[j] = ph[j] / static_cast<double>(o.steps);
  }
  run_forward(v, w, o.warmup_steps, false);
  t0 = Clock::now();
  run_forward(v, w, o.steps, false);
  const double ftps = tokens_per_forward * static_cast<double>(o.steps) / secs_since(t0);
  v.best_fwd_tps = std::max(v.best_fwd_tps, ftps);
  t0 = Clock::now();
  run_forward(v, w, o.steps, true);
  v.best_fwd1_tps = std::max(v.best_fwd1_tps, tokens_per_forward * static_cast<double>(o.steps) / secs_since(t0));
  log << "round " << r + 1 << "/" << o.rounds << " " << v.name << ": train " << static_cast<int64_t>(tps)
      << " tok/s, forward " << static_cast<int64_t>(ftps) << " tok/s\n";
}

nlohmann::json variant_report(Variant& v, const Variant& vanilla, const BenchTrainOptions& o, int64_t V, int64_t pad,
                              int64_t examples_per_step, double tokens_per_step) {
  // achieved model FLOP rate: the variant's own work (dense runs every expert)
  const double flops =
      train_step_flops(model::model_options(v.cfg, V, pad), examples_per_step, o.src_len, o.tgt_len, v.dense);
  const double steps_per_s = v.best_tps / tokens_per_step;
  nlohmann::json j = {{"name", v.name},
                      {"tokens_per_s", v.best_tps},
                      {"ratio_to_vanilla", v.best_tps / vanilla.best_tps},
                      {"forward_tokens_per_s", v.best_fwd_tps},
                      {"forward_ratio_to_vanilla", v.best_fwd_tps / vanilla.best_fwd_tps},
                      {"forward_single_task_tokens_per_s", v.best_fwd1_tps},
                      {"forward_single_task_ratio_to_vanilla", v.best_fwd1_tps / vanilla.best_fwd1_tps},
                      {"step_seconds", {{"forward", v.phase_s[0]}, {"backward", v.phase_s[1]},
                                        {"optimizer", v.phase_s[2]}}},
                      {"params", count_params(*v.model)},
                      {"model_flops_per_step", flops},
                      {"model_tflops_per_s", flops * steps_per_s / 1e12}};
  if (o.peak_tflops > 0) j["mfu"] = flops * steps_per_s / (o.peak_tflops * 1e12);
  if (host_cache_installed())
    j["host_cache_timed_steps"] = {{"hits", v.cache_in_best.hits},
                                   {"misses", v.cache_in_best.misses},
                                   {"evictions", v.cache_in_best.evictions},
                                   {"high_water_bytes", v.cache_in_best.high_water}};
  return j;
}

}  // namespace

nlohmann::json bench_train(const Config& base, const BenchTrainOptions& o, std::ostream& log) {
  const int64_t V = base.tokenizer.vocab_size, pad = 1, B = base.train.batch_size;
  const torch::Device dev = pick_device(base.device);
  std::vector<Variant> vs = make_variants(base, o, V, pad, dev);
  const Workload w = make_workload(base, o, V, pad, dev);
  const double tokens_per_step = static_cast<double>(B * w.accum * (o.src_len + o.tgt_len));
  const double tokens_per_forward = static_cast<double>(B * (o.src_len + o.tgt_len));
  for (int64_t r = 0; r < o.rounds; ++r)
    for (auto& v : vs) measure(v, w, o, tokens_per_step, tokens_per_forward, r, log);
  nlohmann::json rep;
  rep["what"] = "training step (forward + backward + AdamW) and inference forward tokens/s, synthetic mixed-task batches";
  rep["batch"] = {{"batch_size", B}, {"grad_accum", w.accum}, {"src_len", o.src_len}, {"tgt_len", o.tgt_len}, {"vocab", V}};
  describe_setup(rep, base);
  rep["steps"] = o.steps;
  rep["rounds"] = o.rounds;
  rep["precision"] = w.bf16 ? "bf16 autocast" : "fp32";
  if (o.peak_tflops > 0) rep["peak_tflops"] = o.peak_tflops;
  for (auto& v : vs) rep["variants"].push_back(variant_report(v, vs[0], o, V, pad, B * w.accum, tokens_per_step));
  return rep;
}

}  // namespace tlmoe::bench
