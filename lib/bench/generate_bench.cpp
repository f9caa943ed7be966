// `tlmoe bench generate` (bench.h).
#include <algorithm>
#include <chrono>

#include "bench/bench.h"
#include "bench/common.h"
#include "common/device.h"
#include "model/generate.h"

namespace tlmoe::bench {

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

}  // namespace tlmoe::bench
