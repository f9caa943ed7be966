#include "model/tlmoe_model.h"

#include "common/error.h"

namespace tlmoe::model {

TLMoEModelImpl::TLMoEModelImpl(const ModelOptions& o, const RouterOptions& router, const RoutingPolicy& policy,
                               int64_t n_tasks)
    : Seq2SeqImpl(o), policy_(policy), n_tasks_(n_tasks) {
  if (o.experts <= 1) return;  // the vanilla model: no routing at all
  const int64_t L = o.encoder_layers + o.decoder_layers, E = o.experts;
  if (policy.baseline == "none") {
    TORCH_CHECK(n_tasks > 0, "a routed model needs at least one task");
    task_table = register_module("task_table", torch::nn::Embedding(n_tasks, router.d_in));
    {
      torch::NoGradGuard g;
      task_table->weight.normal_(0.0, 1.0);
    }
    router_ = register_module("router", make_router(router));
  } else if (policy.baseline == "task_random") {
    task_random_routes = register_buffer("task_random_routes",
                                         task_random_table(n_tasks, L, E, policy.random_n, policy.seed));
  }
}

torch::Tensor TLMoEModelImpl::router_logits(const torch::Tensor& task_ids) {
  TORCH_CHECK(router_, "this model has no learned router (routing.baseline = ", policy_.baseline, ")");
  return router_->forward(task_table(task_ids));  // [L,B,E]
}

Routes TLMoEModelImpl::route_weights(const torch::Tensor& task_ids, const RouteContext& ctx) {
  const auto& o = options();
  const int64_t L = o.encoder_layers + o.decoder_layers, E = o.experts, B = task_ids.size(0);
  std::optional<at::Generator> gen = ctx.gen;
  Routes r;
  if (policy_.baseline == "average") {
    r = average_routes(L, B, E);
  } else if (policy_.baseline == "task_random") {
    r = routes_from_table(task_random_routes, task_ids);
  } else if (policy_.baseline == "instance_random") {
    r = instance_random_routes(L, B, E, gen);
  } else {
    SelectionOptions s;
    s.kind = policy_.selection;
    s.tau = ctx.tau;
    s.top_k = policy_.top_k;
    s.training = ctx.training;
    s.sample_at_eval = policy_.sample_at_eval;
    r = select_routes(router_logits(task_ids), s, gen);
    if (ctx.training && policy_.epsilon > 0)
      r = explore(r, policy_.epsilon, o.encoder_layers, policy_.reference_compat, gen);
  }
  r.weights = r.weights.to(task_ids.device());
  if (r.indices.defined()) r.indices = r.indices.to(task_ids.device());
  return r;
}

std::vector<LayerRoute> TLMoEModelImpl::routes(const torch::Tensor& task_ids, const RouteContext& ctx) {
  if (options().experts <= 1) return {};
  Routes r = route_weights(task_ids, ctx);
  // Sparse execution whenever routes are hard, except while training with the paper's
  // straight-through estimator, which needs every expert's output (docs/method.md §1.4, §13.18).
  const bool sparse = r.hard && (!ctx.training || policy_.estimator == "sparse" || !has_router());
  std::vector<LayerRoute> out;
  for (int64_t l = 0; l < r.weights.size(0); ++l)
    out.push_back({r.weights[l], r.hard ? r.indices[l] : torch::Tensor(), sparse});
  return out;
}

ModelOptions model_options(const Config& cfg, int64_t vocab_size, int64_t pad_id) {
  ModelOptions o;
  o.vocab_size = vocab_size;
  o.pad_id = pad_id;
  o.layer.d_model = cfg.model.d_model;
  o.layer.heads = cfg.model.heads;
  o.layer.ffn_dim = cfg.model.ffn_dim;
  o.layer.dropout = cfg.model.dropout;
  o.layer.attention_dropout = cfg.model.attention_dropout;
  o.layer.activation_dropout = cfg.model.activation_dropout;
  o.layer.init_std = cfg.model.init_std;
  o.encoder_layers = cfg.model.encoder_layers;
  o.decoder_layers = cfg.model.decoder_layers;
  o.experts = cfg.model.experts;
  o.vanilla_encoder_layers = cfg.model.vanilla_encoder_layers;
  o.vanilla_decoder_layers = cfg.model.vanilla_decoder_layers;
  o.max_positions = cfg.model.max_positions;
  o.scale_embedding = cfg.model.scale_embedding;
  return o;
}

RouterOptions router_options(const Config& cfg) {
  RouterOptions r;
  r.kind = cfg.routing.router;
  r.d_in = cfg.task_rep.dim;
  r.hidden = cfg.routing.hidden;
  r.layers = cfg.model.encoder_layers + cfg.model.decoder_layers;
  r.experts = cfg.model.experts;
  r.init_std = cfg.model.init_std;
  r.transformer_heads = cfg.routing.transformer_heads;
  r.transformer_ffn = cfg.routing.transformer_ffn;
  return r;
}

RoutingPolicy routing_policy(const Config& cfg) {
  RoutingPolicy p;
  p.selection = cfg.routing.selection;
  p.top_k = cfg.routing.top_k;
  p.estimator = cfg.routing.estimator;
  p.baseline = cfg.routing.baseline;
  p.random_n = cfg.routing.random_n;
  p.epsilon = cfg.routing.epsilon;
  p.sample_at_eval = cfg.routing.eval_routes == "sample" || cfg.reference_compat;
  p.reference_compat = cfg.reference_compat;
  p.seed = static_cast<uint64_t>(cfg.train.seed);
  return p;
}

}  // namespace tlmoe::model
