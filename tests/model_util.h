// Small models for tests: dropout-free options and one-hot routes, shared by the unit and GPU tests.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "kernels/device.h"
#include "model/seq2seq.h"
#include "train/loss.h"

namespace tlmoe::test {

struct SmallModel {
  int64_t vocab = 29, d_model = 16, heads = 4, ffn = 24, layers = 2, experts = 3, max_positions = 40;
};

// Options of a dropout-free model with `layers` encoder and decoder layers (pad id 1).
inline model::ModelOptions small_model_options(const SmallModel& s) {
  model::ModelOptions o;
  o.vocab_size = s.vocab;
  o.pad_id = 1;
  o.layer.d_model = s.d_model;
  o.layer.heads = s.heads;
  o.layer.ffn_dim = s.ffn;
  o.layer.dropout = o.layer.attention_dropout = o.layer.activation_dropout = 0.0;
  o.encoder_layers = s.layers;
  o.decoder_layers = s.layers;
  o.experts = s.experts;
  o.max_positions = s.max_positions;
  return o;
}

// One-hot routes from choices [L,B] (one expert per example and layer) on `device`; the
// weights are fp32 leaves (collected in `leaves` when given, requiring grad when asked).
inline std::vector<model::LayerRoute> one_hot_routes(const torch::Tensor& choice, int64_t experts, bool sparse,
                                                     const torch::Device& device = torch::kCPU,
                                                     bool requires_grad = false,
                                                     std::vector<torch::Tensor>* leaves = nullptr) {
  std::vector<model::LayerRoute> r;
  for (int64_t l = 0; l < choice.size(0); ++l) {
    auto w = torch::one_hot(choice[l], experts).to(torch::kFloat).to(device);
    if (requires_grad) w.requires_grad_();
    if (leaves) leaves->push_back(w);
    r.push_back({w, choice[l].unsqueeze(1).contiguous().to(device), sparse});
  }
  return r;
}

// Trains `m` (on `device`) with Adam on one random batch under bf16 autocast, as the trainer
// does: forward in the guard, the loss in fp32 outside. Reports the per-token loss of the first
// and last step, whether every loss was fp32, and the step-0 logits with and without autocast.
struct AutocastRun {
  double first = 0, last = 0;
  bool loss_fp32 = true;
  torch::Tensor logits_autocast, logits_fp32;  // step 0, as fp32
};

inline AutocastRun memorise_with_autocast(model::Seq2Seq& m, const torch::Device& device, const torch::Tensor& choice,
                                          int64_t experts, int steps, double lr) {
  const int64_t B = choice.size(1), S = 7, T = 5, V = m->options().vocab_size;
  m->to(device);
  m->train();
  torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(lr));
  auto ids = torch::randint(3, V, {B, S}, torch::kLong).to(device);
  auto mask = torch::ones({B, S}, torch::kLong).to(device);
  auto tgt = torch::randint(3, V, {B, T}, torch::kLong).to(device);
  auto dec = torch::cat({torch::full({B, 1}, 2, torch::kLong).to(device), tgt.slice(1, 0, T - 1)}, 1);
  auto routes = one_hot_routes(choice, experts, /*sparse=*/true, device);
  train::LossOptions lo;
  lo.pad_id = 1;
  AutocastRun out;
  for (int step = 0; step < steps; ++step) {
    torch::Tensor logits;
    {
      kernels::AutocastGuard amp(true, device);
      logits = m->forward(ids, mask, dec, routes);
    }
    if (step == 0) {
      torch::NoGradGuard ng;
      out.logits_autocast = logits.detach().to(torch::kCPU, torch::kFloat);
      out.logits_fp32 = m->forward(ids, mask, dec, routes).to(torch::kCPU, torch::kFloat);
    }
    auto r = train::label_smoothed_nll(logits, tgt, lo);
    out.loss_fp32 = out.loss_fp32 && r.loss.scalar_type() == torch::kFloat;
    opt.zero_grad();
    r.loss.backward();
    opt.step();
    (step == 0 ? out.first : out.last) = r.loss.item<double>() / static_cast<double>(r.tokens);
  }
  return out;
}

}  // namespace tlmoe::test
