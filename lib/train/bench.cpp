#include "train/bench.h"

#include <array>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <thread>

#include "model/generate.h"
#include "model/tlmoe_model.h"
#include "train/loss.h"
#include "train/optim.h"

namespace tlmoe::train {

namespace {

struct Variant {
  std::string name;
  Config cfg;
  model::TLMoEModel model{nullptr};
  std::unique_ptr<AdamW> opt;
  double best_tps = 0;      // training step
  double best_fwd_tps = 0;  // inference forward (no grad, eval mode)
  std::array<double, 3> phase_s{};  // forward, backward, optimizer seconds per step (best round)
};

int64_t count_params(torch::nn::Module& m) {
  int64_t n = 0;
  for (auto& p : m.parameters()) n += p.numel();
  return n;
}

// The model shape and the machine's threads, shared by every bench report.
void describe_setup(nlohmann::json& rep, const Config& base) {
  rep["model"] = {{"d_model", base.model.d_model},
                  {"layers", std::to_string(base.model.encoder_layers) + "+" + std::to_string(base.model.decoder_layers)},
                  {"ffn_dim", base.model.ffn_dim},
                  {"experts", base.model.experts}};
  rep["threads"] = torch::get_num_threads();
  rep["hardware_threads"] = std::thread::hardware_concurrency();
}

}  // namespace

nlohmann::json bench_train(const Config& base, const BenchTrainOptions& o, std::ostream& log) {
  const int64_t V = base.tokenizer.vocab_size, pad = 1, B = base.train.batch_size;
  std::vector<Variant> vs(3);
  vs[0].name = "vanilla (m=1)";
  vs[0].cfg = base;
  vs[0].cfg.model.experts = 1;
  vs[1].name = "dense MoE (m=" + std::to_string(base.model.experts) + ", dense_st)";
  vs[1].cfg = base;
  vs[1].cfg.routing.selection = "gumbel_st";
  vs[1].cfg.routing.estimator = "dense_st";
  vs[2].name = "sparse top-1 MoE (m=" + std::to_string(base.model.experts) + ", sparse)";
  vs[2].cfg = base;
  vs[2].cfg.routing.selection = "gumbel_st";
  vs[2].cfg.routing.estimator = "sparse";
  for (auto& v : vs) {
    v.cfg.routing.baseline = "none";
    v.cfg.model.dropout = base.model.dropout;
    torch::manual_seed(0);
    v.model = model::TLMoEModel(model::model_options(v.cfg, V, pad), model::router_options(v.cfg),
                                model::routing_policy(v.cfg), o.num_tasks);
    v.model->train();
    GroupSpec gs{v.cfg.train.lr, v.cfg.train.router_lr, v.cfg.train.task_lr, v.cfg.train.weight_decay};
    v.opt = std::make_unique<AdamW>(build_param_groups(*v.model, gs), AdamWOptions{});
  }
  // Synthetic batches: same for every variant.
  torch::manual_seed(1);
  std::vector<std::array<torch::Tensor, 4>> batches;
  for (int64_t i = 0; i < o.steps; ++i) {
    auto src = torch::randint(4, V, {B, o.src_len}, torch::kLong);
    auto tgt = torch::randint(4, V, {B, o.tgt_len}, torch::kLong);
    auto dec = torch::cat({torch::full({B, 1}, 2, torch::kLong), tgt.slice(1, 0, o.tgt_len - 1)}, 1);
    auto tasks = torch::randint(0, o.num_tasks, {B}, torch::kLong);
    batches.push_back({src, tgt, dec, tasks});
  }
  auto mask = torch::ones({B, o.src_len}, torch::kLong);
  LossOptions lo;
  lo.pad_id = pad;
  using Clock = std::chrono::steady_clock;
  auto secs_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  // Training steps; returns the seconds spent in forward (incl. loss), backward and the optimizer.
  auto run_steps = [&](Variant& v, int64_t n) {
    std::array<double, 3> ph{};
    for (int64_t i = 0; i < n; ++i) {
      const auto& b = batches[i % batches.size()];
      model::RouteContext ctx;
      ctx.training = true;
      ctx.tau = 1.0;
      auto t = Clock::now();
      auto logits = v.model->forward(b[0], mask, b[2], v.model->routes(b[3], ctx));
      auto loss = label_smoothed_nll(logits, b[1], lo).loss;
      ph[0] += secs_since(t);
      t = Clock::now();
      loss.backward();
      ph[1] += secs_since(t);
      t = Clock::now();
      v.opt->step(1.0);
      v.opt->zero_grad();
      ph[2] += secs_since(t);
    }
    return ph;
  };
  // Inference forward passes (eval mode, no autograd): the cost of scoring a batch.
  auto run_forward = [&](Variant& v, int64_t n) {
    torch::NoGradGuard ng;
    v.model->eval();
    for (int64_t i = 0; i < n; ++i) {
      const auto& b = batches[i % batches.size()];
      model::RouteContext ctx;
      ctx.training = false;
      ctx.tau = 1.0;
      v.model->forward(b[0], mask, b[2], v.model->routes(b[3], ctx));
    }
    v.model->train();
  };
  const double tokens_per_step = static_cast<double>(B * (o.src_len + o.tgt_len));
  for (int64_t r = 0; r < o.rounds; ++r) {
    for (auto& v : vs) {
      run_steps(v, o.warmup_steps);
      auto t0 = Clock::now();
      auto ph = run_steps(v, o.steps);
      double tps = tokens_per_step * static_cast<double>(o.steps) / secs_since(t0);
      if (tps > v.best_tps) {
        v.best_tps = tps;
        for (int j = 0; j < 3; ++j) v.phase_s[j] = ph[j] / static_cast<double>(o.steps);
      }
      run_forward(v, o.warmup_steps);
      t0 = Clock::now();
      run_forward(v, o.steps);
      const double ftps = tokens_per_step * static_cast<double>(o.steps) / secs_since(t0);
      v.best_fwd_tps = std::max(v.best_fwd_tps, ftps);
      log << "round " << r + 1 << "/" << o.rounds << " " << v.name << ": train " << static_cast<int64_t>(tps)
          << " tok/s, forward " << static_cast<int64_t>(ftps) << " tok/s\n";
    }
  }
  nlohmann::json rep;
  rep["what"] = "training step (forward + backward + AdamW) and inference forward tokens/s, synthetic mixed-task batches";
  rep["batch"] = {{"batch_size", B}, {"src_len", o.src_len}, {"tgt_len", o.tgt_len}, {"vocab", V}};
  describe_setup(rep, base);
  rep["steps"] = o.steps;
  rep["rounds"] = o.rounds;
  for (auto& v : vs)
    rep["variants"].push_back({{"name", v.name},
                               {"tokens_per_s", v.best_tps},
                               {"ratio_to_vanilla", v.best_tps / vs[0].best_tps},
                               {"forward_tokens_per_s", v.best_fwd_tps},
                               {"forward_ratio_to_vanilla", v.best_fwd_tps / vs[0].best_fwd_tps},
                               {"step_seconds", {{"forward", v.phase_s[0]}, {"backward", v.phase_s[1]},
                                                 {"optimizer", v.phase_s[2]}}},
                               {"params", count_params(*v.model)}});
  return rep;
}

nlohmann::json bench_generate(const Config& base, const BenchGenerateOptions& o, std::ostream& log) {
  const int64_t V = base.tokenizer.vocab_size, pad = 1, B = base.eval.batch_size;
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
    batches.emplace_back(torch::randint(4, V, {B, o.src_len}, torch::kLong),
                         torch::full({B}, i % o.num_tasks, torch::kLong));
  auto mask = torch::ones({B, o.src_len}, torch::kLong);
  for (int64_t r = 0; r < o.rounds; ++r) {
    for (auto& v : vs) {
      model::RouteContext ctx;
      ctx.training = false;
      ctx.tau = 1.0;
      auto t0 = std::chrono::steady_clock::now();
      for (const auto& [src, tasks] : batches) model::generate(*v.model, src, mask, v.model->routes(tasks, ctx), g);
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

std::string format_bench_table(const nlohmann::json& rep) {
  std::ostringstream s;
  char line[320];
  const bool gen = rep.value("unit", "") == "examples/s";
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
  std::snprintf(line, sizeof line, "%-44s %12s %7s %12s %7s %24s %10s\n", "variant", "train tok/s", "ratio",
                "fwd tok/s", "ratio", "step ms (fwd/bwd/opt)", "params");
  s << line;
  for (const auto& v : rep["variants"]) {
    const auto& ph = v["step_seconds"];
    char phases[64];
    std::snprintf(phases, sizeof phases, "%.1f/%.1f/%.1f", 1e3 * ph["forward"].get<double>(),
                  1e3 * ph["backward"].get<double>(), 1e3 * ph["optimizer"].get<double>());
    std::snprintf(line, sizeof line, "%-44s %12.0f %6.2fx %12.0f %6.2fx %24s %10lld\n",
                  v["name"].get<std::string>().c_str(), v["tokens_per_s"].get<double>(),
                  v["ratio_to_vanilla"].get<double>(), v["forward_tokens_per_s"].get<double>(),
                  v["forward_ratio_to_vanilla"].get<double>(), phases,
                  static_cast<long long>(v["params"].get<int64_t>()));
    s << line;
  }
  return s.str();
}

}  // namespace tlmoe::train
