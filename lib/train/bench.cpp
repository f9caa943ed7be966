#include "train/bench.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/host_cache.h"
#include "common/strings.h"
#include "kernels/device.h"
#include "kernels/dispatch.h"
#include "model/generate.h"
#include "model/tlmoe_model.h"
#include "train/loss.h"
#include "train/evaluate.h"
#include "train/optim.h"

namespace tlmoe::train {

namespace {

struct Variant {
  std::string name;
  Config cfg;
  model::TLMoEModel model{nullptr};
  std::unique_ptr<AdamW> opt;
  double best_tps = 0;      // training step
  double best_fwd_tps = 0;  // inference forward (no grad, eval mode), mixed-task batches
  double best_fwd1_tps = 0; // the same on single-task batches (how eval and adapt score a task)
  HostCacheStats cache_in_best{};   // CPU block cache activity during the best round's timed steps
  std::array<double, 3> phase_s{};  // forward, backward, optimizer seconds per step (best round)
  bool dense = false;               // every expert runs
};

int64_t count_params(torch::nn::Module& m) {
  int64_t n = 0;
  for (auto& p : m.parameters()) n += p.numel();
  return n;
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// The model shape and the machine's threads, shared by every bench report.
void describe_setup(nlohmann::json& rep, const Config& base) {
  rep["model"] = {{"d_model", base.model.d_model},
                  {"layers", std::to_string(base.model.encoder_layers) + "+" + std::to_string(base.model.decoder_layers)},
                  {"ffn_dim", base.model.ffn_dim},
                  {"experts", base.model.experts}};
  rep["device"] = pick_device(base.device).str();
  rep["threads"] = torch::get_num_threads();
  rep["hardware_threads"] = std::thread::hardware_concurrency();
}

// Model FLOPs of one training step (forward + backward = 3 x forward, 2 FLOPs per multiply-add)
// of an encoder-decoder with B examples of S source and T target tokens. Counted: every
// projection, the feed-forward blocks, the attention products (QK^T and AV) and the LM head;
// not counted: layer norms, softmax, embeddings lookups, the router. A routed layer runs one
// expert per example (top-1 sparse, vanilla) or all m of them (dense).
double train_step_flops(const model::ModelOptions& mo, int64_t B, int64_t S, int64_t T, bool dense) {
  const double d = static_cast<double>(mo.layer.d_model), F = static_cast<double>(mo.layer.ffn_dim);
  const double s = static_cast<double>(S), t = static_cast<double>(T), V = static_cast<double>(mo.vocab_size);
  auto runs = [&](const std::vector<int64_t>& vanilla, int64_t l) {
    const bool routed = mo.experts > 1 && std::find(vanilla.begin(), vanilla.end(), l) == vanilla.end();
    return dense && routed ? static_cast<double>(mo.experts) : 1.0;
  };
  double macs = 0;
  for (int64_t l = 0; l < mo.encoder_layers; ++l)
    macs += runs(mo.vanilla_encoder_layers, l) * s * (4 * d * d + 2 * d * F + 2 * s * d);
  for (int64_t l = 0; l < mo.decoder_layers; ++l)
    macs += runs(mo.vanilla_decoder_layers, l) *
            (t * (4 * d * d + 2 * t * d + 2 * d * d + 2 * s * d + 2 * d * F) + s * 2 * d * d);
  macs += t * d * V;
  return 3.0 * 2.0 * static_cast<double>(B) * macs;
}

}  // namespace

nlohmann::json bench_train(const Config& base, const BenchTrainOptions& o, std::ostream& log) {
  const int64_t V = base.tokenizer.vocab_size, pad = 1, B = base.train.batch_size;
  const int64_t accum = base.train.grad_accum;  // micro-batches per optimizer step, as `tlmoe train` runs them
  const torch::Device dev = pick_device(base.device);
  const bool bf16 = kernels::use_bf16_autocast(base.train.precision, dev);
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
    GroupSpec gs{v.cfg.train.lr, v.cfg.train.router_lr, v.cfg.train.task_lr, v.cfg.train.weight_decay};
    v.opt = std::make_unique<AdamW>(build_param_groups(*v.model, gs), AdamWOptions{});
  }
  // Synthetic batches: same for every variant.
  torch::manual_seed(1);
  std::vector<std::array<torch::Tensor, 4>> batches;
  for (int64_t i = 0; i < o.steps * accum; ++i) {
    auto src = torch::randint(4, V, {B, o.src_len}, torch::kLong);
    auto tgt = torch::randint(4, V, {B, o.tgt_len}, torch::kLong);
    auto dec = torch::cat({torch::full({B, 1}, 2, torch::kLong), tgt.slice(1, 0, o.tgt_len - 1)}, 1);
    auto tasks = torch::randint(0, o.num_tasks, {B}, torch::kLong);
    batches.push_back({src.to(dev), tgt.to(dev), dec.to(dev), tasks.to(dev)});
  }
  auto mask = torch::ones({B, o.src_len}, torch::kLong).to(dev);
  LossOptions lo;
  lo.pad_id = pad;
  using Clock = std::chrono::steady_clock;
  auto secs_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  // Optimizer steps of `accum` micro-batches each (gradients accumulate, the loss of each
  // micro-batch scaled by 1/accum as in training); returns the seconds per step spent in forward
  // (incl. loss), backward and the optimizer, summed over the step's micro-batches.
  auto run_steps = [&](Variant& v, int64_t n) {
    std::array<double, 3> ph{};
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t a = 0; a < accum; ++a) {
        const auto& b = batches[(i * accum + a) % batches.size()];
        model::RouteContext ctx;
        ctx.training = true;
        ctx.tau = 1.0;
        auto t = Clock::now();
        torch::Tensor logits;
        {
          kernels::AutocastGuard amp(bf16, dev);
          logits = v.model->forward(b[0], mask, b[2], v.model->routes(b[3], ctx));
        }
        auto loss = label_smoothed_nll(logits, b[1], lo).loss;
        if (accum > 1) loss = loss / static_cast<double>(accum);
        sync(dev);
        ph[0] += secs_since(t);
        t = Clock::now();
        loss.backward();
        sync(dev);
        ph[1] += secs_since(t);
      }
      auto t = Clock::now();
      v.opt->step(1.0);
      v.opt->zero_grad();
      sync(dev);
      ph[2] += secs_since(t);
    }
    return ph;
  };
  // Inference forward passes (eval mode, no autograd): the cost of scoring a batch.
  auto run_forward = [&](Variant& v, int64_t n, bool single_task) {
    torch::NoGradGuard ng;
    kernels::AutocastGuard amp(bf16, dev);
    v.model->eval();
    for (int64_t i = 0; i < n; ++i) {
      const auto& b = batches[i % batches.size()];
      model::RouteContext ctx;
      ctx.training = false;
      ctx.tau = 1.0;
      auto tasks = single_task ? torch::full_like(b[3], i % o.num_tasks) : b[3];
      v.model->forward(b[0], mask, b[2], v.model->routes(tasks, ctx));
    }
    sync(dev);
    v.model->train();
  };
  const double tokens_per_step = static_cast<double>(B * accum * (o.src_len + o.tgt_len));
  const double tokens_per_forward = static_cast<double>(B * (o.src_len + o.tgt_len));
  for (int64_t r = 0; r < o.rounds; ++r) {
    for (auto& v : vs) {
      run_steps(v, o.warmup_steps);
      const auto c0 = host_cache_stats();
      auto t0 = Clock::now();
      auto ph = run_steps(v, o.steps);
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
      run_forward(v, o.warmup_steps, false);
      t0 = Clock::now();
      run_forward(v, o.steps, false);
      const double ftps = tokens_per_forward * static_cast<double>(o.steps) / secs_since(t0);
      v.best_fwd_tps = std::max(v.best_fwd_tps, ftps);
      t0 = Clock::now();
      run_forward(v, o.steps, true);
      v.best_fwd1_tps = std::max(v.best_fwd1_tps, tokens_per_forward * static_cast<double>(o.steps) / secs_since(t0));
      log << "round " << r + 1 << "/" << o.rounds << " " << v.name << ": train " << static_cast<int64_t>(tps)
          << " tok/s, forward " << static_cast<int64_t>(ftps) << " tok/s\n";
    }
  }
  nlohmann::json rep;
  rep["what"] = "training step (forward + backward + AdamW) and inference forward tokens/s, synthetic mixed-task batches";
  rep["batch"] = {{"batch_size", B}, {"grad_accum", accum}, {"src_len", o.src_len}, {"tgt_len", o.tgt_len}, {"vocab", V}};
  describe_setup(rep, base);
  rep["steps"] = o.steps;
  rep["rounds"] = o.rounds;
  rep["precision"] = bf16 ? "bf16 autocast" : "fp32";
  if (o.peak_tflops > 0) rep["peak_tflops"] = o.peak_tflops;
  for (size_t i = 0; i < vs.size(); ++i) {
    auto& v = vs[i];
    // achieved model FLOP rate: the variant's own work (dense runs every expert)
    const double flops = train_step_flops(model::model_options(v.cfg, V, pad), B * accum, o.src_len, o.tgt_len, v.dense);
    const double steps_per_s = v.best_tps / tokens_per_step;
    nlohmann::json j = {{"name", v.name},
                               {"tokens_per_s", v.best_tps},
                               {"ratio_to_vanilla", v.best_tps / vs[0].best_tps},
                               {"forward_tokens_per_s", v.best_fwd_tps},
                               {"forward_ratio_to_vanilla", v.best_fwd_tps / vs[0].best_fwd_tps},
                               {"forward_single_task_tokens_per_s", v.best_fwd1_tps},
                               {"forward_single_task_ratio_to_vanilla", v.best_fwd1_tps / vs[0].best_fwd1_tps},
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
    rep["variants"].push_back(j);
  }
  return rep;
}

nlohmann::json bench_generate(const Config& base, const BenchGenerateOptions& o, std::ostream& log) {
  const int64_t V = base.tokenizer.vocab_size, pad = 1, B = base.eval.batch_size;
  const torch::Device dev = pick_device(base.device);
  struct GenVariant {
    std::string name;
    Config cfg;
    model::TLMoEModel model{nullptr};
    double best = 0;
  };
  std::vector<GenVariant> vs(3);
  vs[0].name = "vanilla (m=1)";
  vs[0].cfg = base;
  vs[0].cfg.model.experts = 1;
  vs[1].name = "dense soft routes (m=" + std::to_string(base.model.experts) + ", softmax)";
  vs[1].cfg = base;
  vs[1].cfg.routing.selection = "softmax";
  vs[2].name = "sparse hard routes (m=" + std::to_string(base.model.experts) + ", top-1)";
  vs[2].cfg = base;
  vs[2].cfg.routing.selection = "gumbel_st";
  for (auto& v : vs) {
    v.cfg.routing.baseline = "none";
    torch::manual_seed(0);
    v.model = model::TLMoEModel(model::model_options(v.cfg, V, pad), model::router_options(v.cfg),
                                model::routing_policy(v.cfg), o.num_tasks);
    v.model->to(dev);
    v.model->eval();
  }
  model::GenerationOptions g;
  g.num_beams = base.eval.num_beams;
  g.max_len = base.eval.max_len;
  g.min_len = base.eval.max_len;  // EOS never allowed: every variant decodes max_len - 1 tokens
  g.decoder_start_id = 2;
  g.eos_id = 2;
  g.pad_id = pad;
  torch::manual_seed(1);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;  // inputs [B,S], task ids [B] (one task per batch)
  for (int64_t i = 0; i < o.batches; ++i)
    batches.emplace_back(torch::randint(4, V, {B, o.src_len}, torch::kLong).to(dev),
                         torch::full({B}, i % o.num_tasks, torch::kLong).to(dev));
  auto mask = torch::ones({B, o.src_len}, torch::kLong).to(dev);
  for (int64_t r = 0; r < o.rounds; ++r) {
    for (auto& v : vs) {
      model::RouteContext ctx;
      ctx.training = false;
      ctx.tau = 1.0;
      auto t0 = std::chrono::steady_clock::now();
      for (const auto& [src, tasks] : batches) model::generate(*v.model, src, mask, v.model->routes(tasks, ctx), g);
      sync(dev);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double eps = static_cast<double>(B * o.batches) / secs;
      v.best = std::max(v.best, eps);
      log << "round " << r + 1 << "/" << o.rounds << " " << v.name << ": " << eps << " examples/s\n";
    }
  }
  nlohmann::json rep;
  rep["what"] = "generation examples/s (encode + " + std::to_string(g.max_len - 1) + " decoding steps, " +
                std::to_string(g.num_beams) + " beam(s), KV cache), synthetic single-task batches";
  rep["unit"] = "examples/s";
  rep["batch"] = {{"batch_size", B}, {"src_len", o.src_len}, {"max_len", g.max_len}, {"num_beams", g.num_beams},
                  {"vocab", V}};
  describe_setup(rep, base);
  rep["rounds"] = o.rounds;
  for (auto& v : vs)
    rep["variants"].push_back({{"name", v.name},
                               {"examples_per_s", v.best},
                               {"ratio_to_vanilla", v.best / vs[0].best},
                               {"params", count_params(*v.model)}});
  return rep;
}

namespace {

struct DispatchShape {
  int64_t B, S, D, m, K;
};

std::vector<DispatchShape> parse_shapes(const std::string& spec) {
  if (spec.empty())
    return {{8, 64, 256, 3, 1},   {32, 128, 512, 3, 1}, {32, 512, 768, 3, 1},
            {32, 512, 768, 3, 3}, {64, 512, 1024, 8, 2}};
  std::vector<DispatchShape> out;
  for (const auto& item : split_list(spec, ';')) {
    auto f = split_list(item, ',');
    if (f.size() != 5) throw UsageError("--shapes: '" + item + "' is not B,S,D,m,K");
    std::array<int64_t, 5> v{};
    for (size_t i = 0; i < 5; ++i) {
      try {
        size_t used = 0;
        v[i] = std::stoll(f[i], &used);
        if (used != f[i].size() || v[i] <= 0) throw std::invalid_argument(f[i]);
      } catch (const std::exception&) {
        throw UsageError("--shapes: '" + f[i] + "' in '" + item + "' is not a positive integer");
      }
    }
    if (v[4] > v[3]) throw UsageError("--shapes: K = " + f[4] + " exceeds m = " + f[3] + " in '" + item + "'");
    out.push_back({v[0], v[1], v[2], v[3], v[4]});
  }
  return out;
}

// Best seconds per call of fn over `rounds` rounds of at least min_seconds each.
template <class Fn>
double time_op(const torch::Device& dev, double min_seconds, int64_t rounds, Fn&& fn) {
  using Clock = std::chrono::steady_clock;
  fn();  // warm-up (allocator, caches)
  sync(dev);
  double best = INFINITY;
  for (int64_t r = 0; r < rounds; ++r) {
    int64_t n = 0;
    const auto t0 = Clock::now();
    double secs = 0;
    do {
      fn();
      ++n;
      if (n % 4 == 0 || dev.is_cpu()) sync(dev);
      secs = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (secs < min_seconds / static_cast<double>(rounds) || n < 3);
    sync(dev);
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::min(best, secs / static_cast<double>(n));
  }
  return best;
}

}  // namespace

nlohmann::json bench_dispatch(const Config& cfg, const BenchDispatchOptions& o, std::ostream& log) {
  const torch::Device dev = pick_device(cfg.device);
  std::vector<torch::ScalarType> dtypes = {torch::kFloat};
  if (dev.is_cuda()) dtypes.push_back(torch::kBFloat16);
  nlohmann::json rep;
  rep["what"] =
      "dispatch bandwidth, GB/s = (bytes read + bytes written) / s; copy = a device copy of the same bytes into a new "
      "tensor (x.clone(): allocation included, as the ops allocate their outputs)";
  rep["device"] = dev.str();
  rep["threads"] = torch::get_num_threads();
  rep["hardware_threads"] = std::thread::hardware_concurrency();
  rep["unit"] = "GB/s";
  auto gen = torch::Generator(at::detail::createCPUGenerator(5));
  for (const auto& sh : parse_shapes(o.shapes)) {
    // K distinct experts per example, uniformly at random (uneven counts, as real routes give)
    std::vector<torch::Tensor> picks;
    for (int64_t b = 0; b < sh.B; ++b) picks.push_back(torch::randperm(sh.m, gen, torch::kLong).slice(0, 0, sh.K));
    auto idx = torch::stack(picks).to(dev);
    auto plan = kernels::make_plan(idx, sh.m);
    for (auto dt : dtypes) {
      torch::NoGradGuard ng;
      auto opts = torch::TensorOptions().dtype(dt).device(dev);
      auto x = torch::randn({sh.B, sh.S, sh.D}, opts);
      auto ys = torch::randn({sh.B * sh.K, sh.S, sh.D}, opts);
      auto w = torch::rand({sh.B, sh.K}, opts.dtype(torch::kFloat));
      auto w_slot = torch::empty({sh.B * sh.K}, w.options()).index_put_({plan.slot_of.reshape({-1})}, w.reshape({-1}));
      const double row = static_cast<double>(sh.S * sh.D * x.element_size());
      const double gather_bytes = 2.0 * static_cast<double>(sh.B * sh.K) * row;          // read + write
      const double scatter_bytes = static_cast<double>(sh.B * sh.K + sh.B) * row;          // read BK rows, write B
      auto copy_src = torch::randn({sh.B * sh.K, sh.S, sh.D}, opts), copy_dst = torch::empty_like(copy_src);
      const int64_t half_rows = (sh.B * sh.K + sh.B + 1) / 2;  // a copy moving scatter_bytes
      auto copy2_src = torch::randn({half_rows, sh.S, sh.D}, opts), copy2_dst = torch::empty_like(copy2_src);
      // The ceiling: a device copy of the same bytes into a fresh tensor (allocation included,
      // as the ops allocate their outputs); the copy into a preallocated buffer is reported too.
      const double t_copy = time_op(dev, o.min_seconds, o.rounds, [&] { copy_src.clone(); });
      const double t_copy2 = time_op(dev, o.min_seconds, o.rounds, [&] { copy2_src.clone(); });
      const double t_copy_pre = time_op(dev, o.min_seconds, o.rounds, [&] { copy_dst.copy_(copy_src); });
      const double t_gather = time_op(dev, o.min_seconds, o.rounds, [&] { kernels::gather_rows(x, plan); });
      const double t_isel = time_op(dev, o.min_seconds, o.rounds, [&] { x.index_select(0, plan.rows); });
      const double t_comb = time_op(dev, o.min_seconds, o.rounds, [&] { kernels::combine_rows(ys, w, plan); });
      const double t_iadd = time_op(dev, o.min_seconds, o.rounds, [&] {
        torch::zeros({sh.B, sh.S, sh.D}, opts).index_add_(0, plan.rows, ys * w_slot.to(dt).view({-1, 1, 1}));
      });
      const double copy_g = gather_bytes / t_copy / 1e9, copy_s = 2.0 * half_rows * row / t_copy2 / 1e9;
      nlohmann::json j = {{"B", sh.B},
                          {"S", sh.S},
                          {"D", sh.D},
                          {"m", sh.m},
                          {"K", sh.K},
                          {"dtype", std::string(c10::toString(dt))},
                          {"gather_mb", gather_bytes / 1e6},
                          {"copy_gbps_gather_size", copy_g},
                          {"copy_into_preallocated_gbps", gather_bytes / t_copy_pre / 1e9},
                          {"gather_gbps", gather_bytes / t_gather / 1e9},
                          {"index_select_gbps", gather_bytes / t_isel / 1e9},
                          {"scatter_mb", scatter_bytes / 1e6},
                          {"copy_gbps_scatter_size", copy_s},
                          {"scatter_gbps", scatter_bytes / t_comb / 1e9},
                          {"index_add_gbps", scatter_bytes / t_iadd / 1e9}};
      j["gather_vs_copy"] = j["gather_gbps"].get<double>() / copy_g;
      j["scatter_vs_copy"] = j["scatter_gbps"].get<double>() / copy_s;
      log << "B=" << sh.B << " S=" << sh.S << " D=" << sh.D << " m=" << sh.m << " K=" << sh.K << " " << dt
          << ": gather " << j["gather_gbps"].get<double>() << " GB/s, scatter " << j["scatter_gbps"].get<double>()
          << " GB/s\n";
      rep["rows"].push_back(j);
    }
  }
  return rep;
}

std::string format_bench_table(const nlohmann::json& rep) {
  std::ostringstream s;
  char line[320];
  const bool gen = rep.value("unit", "") == "examples/s";
  if (rep.value("unit", "") == "GB/s") {
    std::snprintf(line, sizeof line, "%-26s %-9s %9s %9s %7s %9s | %9s %9s %7s %9s\n", "B,S,D,m,K", "dtype",
                  "copy", "gather", "/copy", "idx_sel", "copy", "scatter", "/copy", "idx_add");
    s << line;
    for (const auto& r : rep["rows"]) {
      char shape[64];
      std::snprintf(shape, sizeof shape, "%lld,%lld,%lld,%lld,%lld", static_cast<long long>(r["B"].get<int64_t>()),
                    static_cast<long long>(r["S"].get<int64_t>()), static_cast<long long>(r["D"].get<int64_t>()),
                    static_cast<long long>(r["m"].get<int64_t>()), static_cast<long long>(r["K"].get<int64_t>()));
      std::snprintf(line, sizeof line, "%-26s %-9s %9.1f %9.1f %6.2fx %9.1f | %9.1f %9.1f %6.2fx %9.1f\n", shape,
                    r["dtype"].get<std::string>().c_str(), r["copy_gbps_gather_size"].get<double>(),
                    r["gather_gbps"].get<double>(), r["gather_vs_copy"].get<double>(),
                    r["index_select_gbps"].get<double>(), r["copy_gbps_scatter_size"].get<double>(),
                    r["scatter_gbps"].get<double>(), r["scatter_vs_copy"].get<double>(),
                    r["index_add_gbps"].get<double>());
      s << line;
    }
    s << "GB/s = (bytes read + written) / s on " << rep.value("device", "?")
      << "; copy = clone() of the same bytes (allocating, like the ops); idx_sel = index_select, idx_add = "
         "zeros().index_add_(ys*w)\n";
    return s.str();
  }
  if (gen) {
    std::snprintf(line, sizeof line, "%-44s %14s %10s %12s\n", "variant", "examples/s", "ratio", "params");
    s << line;
    for (const auto& v : rep["variants"]) {
      std::snprintf(line, sizeof line, "%-44s %14.1f %9.2fx %12lld\n", v["name"].get<std::string>().c_str(),
                    v["examples_per_s"].get<double>(), v["ratio_to_vanilla"].get<double>(),
                    static_cast<long long>(v["params"].get<int64_t>()));
      s << line;
    }
    return s.str();
  }
  std::snprintf(line, sizeof line, "%-44s %12s %7s %12s %7s %9s %24s %10s\n", "variant", "train tok/s", "ratio",
                "fwd tok/s", "ratio", "fwd 1task", "step ms (fwd/bwd/opt)", "params");
  s << line;
  for (const auto& v : rep["variants"]) {
    const auto& ph = v["step_seconds"];
    char phases[64];
    std::snprintf(phases, sizeof phases, "%.1f/%.1f/%.1f", 1e3 * ph["forward"].get<double>(),
                  1e3 * ph["backward"].get<double>(), 1e3 * ph["optimizer"].get<double>());
    std::snprintf(line, sizeof line, "%-44s %12.0f %6.2fx %12.0f %6.2fx %8.2fx %24s %10lld\n",
                  v["name"].get<std::string>().c_str(), v["tokens_per_s"].get<double>(),
                  v["ratio_to_vanilla"].get<double>(), v["forward_tokens_per_s"].get<double>(),
                  v["forward_ratio_to_vanilla"].get<double>(), v["forward_single_task_ratio_to_vanilla"].get<double>(),
                  phases,
                  static_cast<long long>(v["params"].get<int64_t>()));
    s << line;
  }
  if (rep.contains("precision")) {
    const auto& b = rep["batch"];
    s << "batch " << b.value("batch_size", 0) << " x " << b.value("grad_accum", 1) << " micro-batches x (" << b.value("src_len", 0)
      << " + " << b.value("tgt_len", 0) << ") tokens per step; ";
    s << "device " << rep.value("device", "?") << ", " << rep["precision"].get<std::string>() << "; model TFLOP/s:";
    for (const auto& v : rep["variants"]) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " %.3g", v["model_tflops_per_s"].get<double>());
      s << buf;
      if (v.contains("mfu")) {
        std::snprintf(buf, sizeof buf, " (MFU %.1f%%)", 100.0 * v["mfu"].get<double>());
        s << buf;
      }
    }
    s << "\n";
  }
  return s.str();
}

}  // namespace tlmoe::train
