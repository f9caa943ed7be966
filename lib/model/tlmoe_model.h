// The TL-MoE model: the seq2seq backbone with its experts, plus the task table and router that
// turn a task id into per-layer routes (docs/method.md §1-§5), and the routing baselines (docs/method.md §4).
//
// Parameter names: the backbone's HF-style names (seq2seq.h), plus
//   task_table.weight             [n_tasks, d_in]   task representations (learned or loaded)
//   router.*                      the router network (router.h)
//   task_random_routes            [n_tasks, L, E]   buffer of the task_random baseline
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/router.h"
#include "model/selection.h"
#include "model/seq2seq.h"

namespace tlmoe::model {

struct RoutingPolicy {
  std::string selection = "gumbel_st";  // softmax | gumbel | gumbel_st | topk
  int64_t top_k = 1;
  std::string estimator = "dense_st";   // dense_st | sparse
  std::string baseline = "none";        // none | average | task_random | instance_random
  int64_t random_n = 1;
  double epsilon = 0.0;
  bool sample_at_eval = false;
  bool reference_compat = false;
  uint64_t seed = 42;
};

// What a forward pass needs to know to route.
struct RouteContext {
  bool training = false;
  double tau = 1.0;
  std::optional<at::Generator> gen;  // for gumbel noise / random baselines (default generator if empty)
};

class TLMoEModelImpl : public Seq2SeqImpl {
 public:
  TLMoEModelImpl(const ModelOptions& o, const RouterOptions& router, const RoutingPolicy& policy, int64_t n_tasks);

  // Routes of one batch: one LayerRoute per layer (encoder layers first). Empty for m = 1.
  std::vector<LayerRoute> routes(const torch::Tensor& task_ids /*[B]*/, const RouteContext& ctx);
  // The full Routes (weights [L,B,E], indices) behind routes(), for logging and analysis.
  Routes route_weights(const torch::Tensor& task_ids, const RouteContext& ctx);
  // logits [L, n, E] of the given tasks (the learned router; undefined for baselines).
  torch::Tensor router_logits(const torch::Tensor& task_ids);

  bool has_router() const { return router_ != nullptr; }
  int64_t num_tasks() const { return n_tasks_; }
  int64_t num_layers() const { return options().encoder_layers + options().decoder_layers; }
  const RoutingPolicy& policy() const { return policy_; }

  torch::nn::Embedding task_table{nullptr};
  torch::Tensor task_random_routes;

 private:
  std::shared_ptr<RouterImpl> router_;
  RoutingPolicy policy_;
  int64_t n_tasks_;
};
TORCH_MODULE(TLMoEModel);

// Builds options from the config tree (vocabulary and pad id from the tokenizer).
ModelOptions model_options(const Config& cfg, int64_t vocab_size, int64_t pad_id);
RouterOptions router_options(const Config& cfg);
RoutingPolicy routing_policy(const Config& cfg);

}  // namespace tlmoe::model
