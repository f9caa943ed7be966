// Selection functions, the temperature schedule, exploration and the routing baselines
// (docs/method.md §3, §4, §13.3, §13.4, §13.7, §13.8). Stateless free functions; the model owns the
// router and calls these.
//
// Shapes: L routed layers (encoder first), B examples, E experts, K selected experts.
// Weights come back as float32 (float64 when the logits are float64), on the logits' device.
//
// Randomness. Every random draw takes an optional generator. With one, the draw is made on the
// generator's device and moved to the logits' device, so a seeded CPU generator gives the same
// routes wherever the model runs; without one, the default generator of the logits' device is
// used. Gumbel noise is drawn exactly as
//     u = torch::rand(logits.sizes(), gen, dtype).clamp_min(smallest normal of dtype)
//     g = -log(-log(u))
// in the compute dtype above, one value per element of the logits.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tlmoe::model {

struct SelectionOptions {
  std::string kind = "gumbel_st";  // softmax | gumbel | gumbel_st | topk
  double tau = 1.0;                // temperature, > 0
  int64_t top_k = 1;               // K for topk, 1 <= K <= E
  bool training = true;
  bool sample_at_eval = false;     // gumbel modes draw noise at eval too (the reference, docs/method.md §13.3)
};

struct Routes {
  torch::Tensor weights;  // [L,B,E] mixing weights; differentiable w.r.t. the logits where the method allows
  torch::Tensor indices;  // [L,B,K] int64 selected experts when hard (largest weight first), else undefined
  bool hard = false;      // each (layer, example) uses only the K experts in indices
};

// The selection functions (a fixed, explicit table):
//   softmax    w = softmax(logits/τ); soft.
//   gumbel     w = softmax((logits+g)/τ) when training or sample_at_eval, else softmax(logits/τ); soft.
//   gumbel_st  training or sample_at_eval: forward one_hot(argmax((logits+g)/τ)), backward the
//              gradient of s = softmax((logits+g)/τ) (w = hard + (s - s.detach()), so the forward
//              is exactly one-hot); eval otherwise: argmax(logits), no noise, backward through
//              softmax(logits/τ). hard, K = 1.
//   topk       the K largest logits, w = softmax(kept/τ) over them, zero elsewhere; the gradient
//              flows through the kept softmax. hard, indices sorted by weight descending.
// logits [L,B,E]. Unknown kind or a top_k outside [1, E] -> tlmoe::ConfigError.
Routes select_routes(const torch::Tensor& logits, const SelectionOptions& o,
                     std::optional<at::Generator> gen = std::nullopt);
std::vector<std::string> selection_kinds();

// τ(step) = max(τ0 · exp(−rate · step), τ_min) (docs/method.md §3.2); step = optimizer steps done.
double temperature_at(int64_t step, double tau0, double tau_min, double rate);

// Exploration (docs/method.md §3.4, §13.4). Apply only while training. Each (layer, example) route is
// replaced with probability eps by a uniformly random one-hot. With reference_compat, decoder
// layers (index >= encoder_layers) are replaced by the uniform vector 1/E instead (the
// reference's asymmetry). Replaced routes carry no gradient; the others are unchanged.
// Hardness: a hard input stays hard unless a decoder route became uniform; a replaced route of
// a top-K input lists its expert first and K-1 other experts with weight 0.
Routes explore(const Routes& r, double eps, int64_t encoder_layers, bool reference_compat,
               std::optional<at::Generator> gen = std::nullopt);

// Baselines (docs/method.md §4).
// Average routing: 1/E everywhere, soft.
Routes average_routes(int64_t L, int64_t B, int64_t E, torch::TensorOptions opts = torch::kFloat);
// Task-level random table [n_tasks, L, E] float32: for every (task, layer), n distinct experts
// chosen uniformly (partial Fisher-Yates driven by std::mt19937_64(seed), unbiased bounded
// draws) with weight 1/n each. Deterministic for a seed on every platform and LibTorch version;
// independent of torch's RNG. Never trained (docs/method.md §13.7). Requires 1 <= n <= E.
torch::Tensor task_random_table(int64_t n_tasks, int64_t L, int64_t E, int64_t n, uint64_t seed);
// Each example's row of the table: weights [L,B,E] on task_ids' device. hard (indices = the
// chosen expert) when every route has exactly one non-zero weight (n == 1).
Routes routes_from_table(const torch::Tensor& table /*[n_tasks,L,E]*/, const torch::Tensor& task_ids /*[B]*/);
// Instance-level random routing: an independent uniform one-hot per (layer, example); hard.
Routes instance_random_routes(int64_t L, int64_t B, int64_t E, std::optional<at::Generator> gen = std::nullopt,
                              torch::TensorOptions opts = torch::kFloat);

// Mean route entropy per layer (natural log, 0·log 0 = 0): weights [L,B,E] -> [L].
torch::Tensor route_entropy(const torch::Tensor& weights);

}  // namespace tlmoe::model
